import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { unusedPort } from './support/ports.js';
import { startMailbox, type Mailbox } from './support/smtp.js';
import { startProxy, startSmsFakes, TWILIO_SID, TWILIO_TOKEN, type SmsFakes } from './support/sms-fakes.js';
import { MailPool, sendMail } from '../src/factors/delivery/mail.js';
import { sendTwilioSms } from '../src/factors/delivery/twilio.js';
import { sendGatewaySms, renderGatewayRequest, judgeGatewayResponse } from '../src/factors/delivery/gateway.js';
import { DeliveryError, fillTemplate } from '../src/factors/delivery/types.js';
import { SECTIONS, type GatewaySettings, type SmtpSettings, type TwilioSettings } from '../src/settings/settings.js';

const smtp = (over: Partial<SmtpSettings>): SmtpSettings => SECTIONS.smtp.parse({ security: 'none', from: 'Tessera <id@example.test>', ...over });
const twilio = (over: Partial<TwilioSettings>): TwilioSettings => SECTIONS.twilio.parse({ active: true, accountSid: TWILIO_SID, authToken: TWILIO_TOKEN, from: '+15005550006', ...over });
const gateway = (over: Partial<GatewaySettings>): GatewaySettings => SECTIONS.sms_gateway.parse({ active: true, ...over });


describe('code delivery: SMTP, Twilio and a generic SMS gateway', () => {
  let mailbox: Mailbox;
  let fakes: SmsFakes;
  before(async () => {
    mailbox = await startMailbox({ requireAuth: { user: 'mailer', pass: 'mail-pass' } });
    fakes = await startSmsFakes();
  });
  after(async () => {
    await mailbox.close();
    await fakes.close();
  });

  it('templates fill {code}, {minutes} and {app}', () => {
    assert.equal(fillTemplate('{code} for {app}, {minutes} min, {unknown}', { code: '123456', minutes: '5', app: 'Tessera' }), '123456 for Tessera, 5 min, {unknown}');
  });

  it('email arrives at a real SMTP server, with authentication', async () => {
    await sendMail(smtp({ host: '127.0.0.1', port: mailbox.port, user: 'mailer', password: 'mail-pass' }), { to: 'alice@example.test', subject: 'Your code', text: 'Your code is 424242' });
    const mail = await mailbox.next();
    assert.equal(mail.subject, 'Your code');
    assert.match(mail.text ?? '', /424242/);
    assert.equal((mail.to as { text: string }).text, 'alice@example.test');
    assert.match((mail.from as { text: string }).text, /id@example.test/);
  });

  it('codes go over pooled connections: many messages, few connections; new settings, a new pool', async () => {
    const pool = new MailPool();
    try {
      const settings = smtp({ host: '127.0.0.1', port: mailbox.port, user: 'mailer', password: 'mail-pass' });
      const before = mailbox.connections;
      const sent = mailbox.messages.length;
      for (let i = 0; i < 5; i++) await pool.send(settings, { to: `one-${i}@example.test`, subject: 'Your code', text: `Your code is 10000${i}` });
      await Promise.all(Array.from({ length: 10 }, (_, i) => pool.send(settings, { to: `many-${i}@example.test`, text: `Your code is 20000${i}` })));
      assert.equal(mailbox.messages.length - sent, 15);
      const opened = mailbox.connections - before;
      assert.ok(opened >= 1 && opened <= 5, `15 messages over ${opened} connection(s)`);
      // Changed settings take effect at the next message: a new pool with the new credentials.
      await assert.rejects(pool.send({ ...settings, password: 'wrong' }, { to: 'x@example.test', text: 'x' }), DeliveryError);
      await pool.send(settings, { to: 'again@example.test', text: 'Your code is 300000' });
      assert.ok(mailbox.connections - before > opened, 'the settings changed twice: new connections');
      await assert.rejects(pool.send(smtp({}), { to: 'a@example.test', text: 'x' }), /no SMTP host/);
    } finally {
      pool.close();
    }
  });

  it('SMTP failures become delivery errors: wrong password, server down, no host', async () => {
    await assert.rejects(sendMail(smtp({ host: '127.0.0.1', port: mailbox.port, user: 'mailer', password: 'wrong' }), { to: 'a@example.test', text: 'x' }), DeliveryError);
    await assert.rejects(sendMail(smtp({ host: '127.0.0.1', port: await unusedPort() }), { to: 'a@example.test', text: 'x' }), /SMTP delivery failed/);
    await assert.rejects(sendMail(smtp({}), { to: 'a@example.test', text: 'x' }), /no SMTP host/);
  });

  it('Twilio: the Messages API gets the account path, Basic auth and To/From/Body', async () => {
    await sendTwilioSms(twilio({ apiBaseUrl: fakes.url }), { to: '+14155550123', text: '123456 is your code' });
    const request = fakes.twilio.at(-1)!;
    assert.equal(request.path, `/2010-04-01/Accounts/${TWILIO_SID}/Messages.json`);
    const form = new URLSearchParams(request.body);
    assert.equal(form.get('To'), '+14155550123');
    assert.equal(form.get('From'), '+15005550006');
    assert.equal(form.get('Body'), '123456 is your code');
  });

  it('Twilio: a messaging service instead of a from number', async () => {
    await sendTwilioSms(twilio({ apiBaseUrl: fakes.url, from: undefined, messagingServiceSid: `MG${'1'.repeat(32)}` }), { to: '+14155550123', text: 'hi' });
    assert.equal(new URLSearchParams(fakes.twilio.at(-1)!.body).get('MessagingServiceSid'), `MG${'1'.repeat(32)}`);
  });

  it('Twilio errors become delivery errors naming status and code', async () => {
    fakes.twilioError = { status: 400, code: 21211, message: "The 'To' number is not a valid phone number." };
    try {
      await assert.rejects(sendTwilioSms(twilio({ apiBaseUrl: fakes.url }), { to: '+10000000000', text: 'x' }), (e: unknown) => e instanceof DeliveryError && /HTTP 400, code 21211/.test(e.message));
    } finally {
      fakes.twilioError = null;
    }
    await assert.rejects(sendTwilioSms(twilio({ apiBaseUrl: fakes.url, authToken: 'wrong' }), { to: '+14155550123', text: 'x' }), /HTTP 401/);
    await assert.rejects(sendTwilioSms(twilio({ apiBaseUrl: `http://127.0.0.1:${await unusedPort()}` }), { to: '+14155550123', text: 'x' }), DeliveryError);
  });

  it('gateway: POST form body from the template, with Basic auth', async () => {
    await sendGatewaySms(gateway({ url: `${fakes.url}/gateway/send`, senderId: 'TESSERA', template: 'to={to}&from={sender}&text={message}', username: 'gw', password: 'gw-pass' }), { to: '+14155550123', text: 'Code: 1234 & more' });
    const request = fakes.gateway.at(-1)!;
    assert.equal(request.method, 'POST');
    assert.equal(request.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.equal(request.headers.authorization, `Basic ${Buffer.from('gw:gw-pass').toString('base64')}`);
    const form = new URLSearchParams(request.body);
    assert.equal(form.get('to'), '+14155550123');
    assert.equal(form.get('from'), 'TESSERA');
    assert.equal(form.get('text'), 'Code: 1234 & more');
  });

  it('gateway: JSON body with values escaped, and an API key header', async () => {
    await sendGatewaySms(
      gateway({ url: `${fakes.url}/gateway/json`, contentType: 'json', template: '{"to":"{to}","text":"{message}","sender":"{sender}"}', apiKeyHeader: 'X-Api-Key', apiKey: 'k-123' }),
      { to: '+14155550123', text: 'He said "hi"\nnew line' },
    );
    const request = fakes.gateway.at(-1)!;
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers['x-api-key'], 'k-123');
    assert.deepEqual(JSON.parse(request.body), { to: '+14155550123', text: 'He said "hi"\nnew line', sender: '' });
  });

  it('gateway: GET with the template as query string', async () => {
    await sendGatewaySms(gateway({ url: `${fakes.url}/gateway/get?key=abc`, method: 'GET', template: 'dest={to}&msg={message}' }), { to: '+14155550123', text: 'a b' });
    const url = new URL(fakes.gateway.at(-1)!.path, fakes.url);
    assert.equal(fakes.gateway.at(-1)!.method, 'GET');
    assert.equal(url.searchParams.get('key'), 'abc');
    assert.equal(url.searchParams.get('dest'), '+14155550123');
    assert.equal(url.searchParams.get('msg'), 'a b');
  });

  it('gateway: success and failure criteria by text and status', async () => {
    const base = { url: `${fakes.url}/gateway/c` };
    fakes.gatewayAnswer = { status: 200, body: 'ERROR: insufficient credit' };
    await assert.rejects(sendGatewaySms(gateway({ ...base, failureCriteria: { text: ['ERROR'], statuses: [] } }), { to: '+1', text: 'x' }), /failure text "ERROR"/);
    await assert.rejects(sendGatewaySms(gateway({ ...base, successCriteria: { text: ['queued'], statuses: [] } }), { to: '+1', text: 'x' }), /lacks the success text/);
    fakes.gatewayAnswer = { status: 202, body: 'accepted' };
    await assert.rejects(sendGatewaySms(gateway({ ...base, successCriteria: { text: [], statuses: [200] } }), { to: '+1', text: 'x' }), /unexpected status 202/);
    await sendGatewaySms(gateway({ ...base, successCriteria: { text: ['accepted'], statuses: [202] } }), { to: '+1', text: 'x' });
    fakes.gatewayAnswer = { status: 500, body: 'boom' };
    await assert.rejects(sendGatewaySms(gateway(base), { to: '+1', text: 'x' }), /unexpected status 500/);
    fakes.gatewayAnswer = { status: 200, body: 'OK' };
    await assert.rejects(sendGatewaySms(gateway({ ...base, failureCriteria: { text: [], statuses: [200] } }), { to: '+1', text: 'x' }), /status 200 is a failure criterion/);
    assert.equal(judgeGatewayResponse(gateway(base), 204, ''), null);
  });

  it('gateway: a timeout and an unreachable gateway are delivery errors', async () => {
    fakes.gatewayAnswer = { status: 200, body: 'late', delayMs: 2500 };
    try {
      await assert.rejects(sendGatewaySms(gateway({ url: `${fakes.url}/gateway/slow`, timeoutSeconds: 1 }), { to: '+1', text: 'x' }), /timed out after 1 s/);
    } finally {
      fakes.gatewayAnswer = { status: 200, body: 'OK: queued' };
    }
    await assert.rejects(sendGatewaySms(gateway({ url: `http://127.0.0.1:${await unusedPort()}/x` }), { to: '+1', text: 'x' }), /unreachable/);
  });

  it('gateway: the proxy setting is honoured', async () => {
    const proxy = await startProxy();
    try {
      await sendGatewaySms(gateway({ url: `${fakes.url}/gateway/via-proxy`, proxy: proxy.url }), { to: '+14155550123', text: 'x' });
      assert.equal(fakes.gateway.at(-1)!.path, '/gateway/via-proxy');
      assert.ok(proxy.connections.some((c) => c.includes(new URL(fakes.url).host)), `proxy saw ${proxy.connections.join(', ')}`);
    } finally {
      await proxy.close();
    }
  });

  it('renders templates without letting values break out of their field', () => {
    const r = renderGatewayRequest(gateway({ url: 'http://x.test/send', template: 'to={to}&text={message}' }), { to: '+1&admin=1', text: 'a=b&c' });
    const form = new URLSearchParams(r.body!);
    assert.equal(form.get('to'), '+1&admin=1');
    assert.equal(form.get('admin'), null);
  });
});
