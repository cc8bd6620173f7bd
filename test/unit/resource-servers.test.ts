import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grantableScopes, resourceServerInputSchema, type ResourceServer } from '../../src/resource-servers/resource-servers.js';
import { ExpiringCache } from '../../src/cache.js';

const orders: ResourceServer = {
  identifier: 'https://orders.example.test', name: 'Orders', scopes: ['orders:read', 'orders:write'],
  accessTokenFormat: 'jwt', signingAlg: 'RS256', accessTokenTtlSeconds: 300,
};

describe('grantableScopes', () => {
  it('is the API\'s scopes the client was allowed, in the API\'s order', () => {
    assert.deepEqual(grantableScopes(orders, ['orders:read']), ['orders:read']);
    assert.deepEqual(grantableScopes(orders, ['orders:write', 'orders:read']), ['orders:read', 'orders:write']);
  });
  it('drops scopes the API no longer defines; nothing for a client never allowed', () => {
    assert.deepEqual(grantableScopes(orders, ['orders:delete']), []);
    assert.deepEqual(grantableScopes(orders, undefined), []);
    assert.deepEqual(grantableScopes(orders, []), []);
  });
});

describe('resource server registration input', () => {
  const ok = { identifier: 'https://api.example.test/v1', name: 'API', scopes: ['read'] };
  it('defaults to ES256 JWTs valid five minutes', () => {
    const parsed = resourceServerInputSchema.parse(ok);
    assert.equal(parsed.accessTokenFormat, 'jwt');
    assert.equal(parsed.signingAlg, 'ES256');
    assert.equal(parsed.accessTokenTtlSeconds, 300);
  });
  it('wants an absolute URI without a fragment, a name, at least one well-formed scope and a sane lifetime', () => {
    for (const bad of [
      { ...ok, identifier: 'api' },
      { ...ok, identifier: 'https://api.example.test/#x' },
      { ...ok, identifier: `https://api.example.test/${'a'.repeat(600)}` },
      { ...ok, name: '' },
      { ...ok, scopes: [] },
      { ...ok, scopes: ['has space'] },
      { ...ok, scopes: ['quote"d'] },
      { ...ok, accessTokenTtlSeconds: 10 },
      { ...ok, accessTokenTtlSeconds: 86_401 },
      { ...ok, signingAlg: 'HS256' },
      { ...ok, accessTokenFormat: 'paseto' },
    ]) {
      assert.equal(resourceServerInputSchema.safeParse(bad).success, false, JSON.stringify(bad).slice(0, 80));
    }
  });
});

describe('ExpiringCache', () => {
  it('keeps a found value for its lifetime and never keeps "not found"', async () => {
    const cache = new ExpiringCache<number>(60_000);
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await cache.get('a', load), 1);
    assert.equal(await cache.get('a', load), 1);
    assert.equal(loads, 1);
    assert.equal(await cache.get('missing', async () => undefined), undefined);
    assert.equal(await cache.get('missing', async () => 7), 7, 'a miss is asked again');
  });
  it('with a lifetime of 0 keeps nothing; when full it starts over', async () => {
    const none = new ExpiringCache<number>(0);
    let loads = 0;
    await none.get('a', async () => ++loads);
    await none.get('a', async () => ++loads);
    assert.equal(loads, 2);
    const small = new ExpiringCache<string>(60_000, 2);
    await small.get('a', async () => 'A');
    await small.get('b', async () => 'B');
    await small.get('c', async () => 'C');
    assert.equal(await small.get('a', async () => 'A2'), 'A2', 'the full cache was emptied');
  });
});
