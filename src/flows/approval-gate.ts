import type { Context } from 'koa';
import type { User } from '../db/schema.js';
import { loadSettings } from '../settings/settings.js';
import { fillTemplate } from '../factors/delivery/types.js';
import { renderPage } from '../http/views.js';
import { seeOther } from '../http/redirect.js';
import { approvalFor, type ApprovalSubject } from '../approvals/resolve.js';
import { listPolicies, listProfiles } from '../approvals/profiles.js';
import { createRequest, markUndeliverable } from '../approvals/requests.js';
import { recipientFor } from '../approvals/recipients.js';
import { merged, readLedger } from '../sessions/ledger.js';
import { clientOf, requestMeta, type FlowDeps, type InteractionDetails } from './context.js';
import { saveProgress, startsOver, type Progress } from './progress.js';

/** The sign-in's moment, as managers read it. */
export const formatTime = (at: Date) => `${at.toISOString().slice(0, 16).replace('T', ' ')} UTC`;

async function subjectOf(deps: FlowDeps, user: User): Promise<ApprovalSubject> {
  const groups = await deps.db
    .selectFrom('group_members')
    .innerJoin('groups', 'groups.id', 'group_members.group_id')
    .select('groups.name')
    .where('group_members.user_id', '=', user.id)
    .execute();
  const stored = (user.attributes ?? {}) as Record<string, unknown>;
  return {
    username: user.username,
    source: user.source,
    groups: [...groups.map((g) => g.name), ...(Array.isArray(stored.groups) ? stored.groups.map(String) : [])],
    attributes: { ...stored, email: user.email, phone: user.phone, given_name: user.given_name, family_name: user.family_name },
  };
}

/**
 * The manager approval step, between the user's own factors and the end of the login. Where the
 * application or the user's access policy asks for approval, the governing profile either informs
 * the manager (the login goes on) or asks them (the user waits at /interaction/:uid/approval).
 * Returns true when it answered the request itself (a waiting page, a refusal).
 */
export async function approvalGate(ctx: Context, deps: FlowDeps, details: InteractionDetails, user: User, progress: Progress): Promise<boolean> {
  const client = await clientOf(deps, details);
  const required = client.managerApproval || Boolean(progress.requirement?.managerApproval);
  if (!required) return false;
  const { db, audit } = deps;
  const clientId = client.clientId;
  const meta = requestMeta(ctx);
  const earlier = details.session?.uid && details.session.accountId === user.id && !startsOver(progress)
    ? await readLedger(db, details.session.uid, user.id)
    : [];
  const [profiles, policies, settings, subject] = await Promise.all([listProfiles(db), listPolicies(db), loadSettings(db, deps.box), subjectOf(deps, user)]);
  const decision = approvalFor({ required, subject, clientId, passed: merged(earlier, progress.methods).map((p) => p.factor), profiles, policies, settings: settings.approval });
  const refuse = async (reason: string, status = 403) => {
    await audit.record({ type: 'approval.refused', actor: user.username, subject: user.id, clientId, ...meta, details: { reason } });
    renderPage(ctx, 'flows/approval-refused', { title: 'Sign-in needs approval', uid: details.uid, clientName: client.name, reason }, status);
    return true;
  };
  if (decision.kind === 'none') return false;
  if (decision.kind === 'refused') return refuse(`${decision.reason}.`);

  const { profile } = decision;
  const recipient = await recipientFor(user, profile, deps.ldapManager);
  if (!recipient && profile.mode === 'approve') {
    const manager = user.source === 'ldap' ? (user.attributes as Record<string, unknown> | null)?.manager : null;
    return refuse(typeof manager === 'string' && manager
      ? `your manager in the directory (${manager}) has no ${profile.delivery === 'email' ? 'email address' : 'mobile number'} that can be used, and the approval profile names no default recipient. Ask your administrator.`
      : 'there is no manager or sponsor on record to ask, and the approval profile names no default recipient. Ask your administrator.');
  }
  const { request, token } = await createRequest(db, deps.linkKey, {
    profile, user, clientId, interactionUid: details.uid, recipient: recipient?.to ?? null, recipientSource: recipient?.source ?? 'none', ip: meta.ip, userAgent: meta.userAgent,
  });
  const link = token ? `${profile.base_url ?? deps.issuer}/approval/${token}` : '';
  const values = {
    // "Alice Adams (alice)", or just "alice" when there are no names.
    name: [user.given_name, user.family_name].filter(Boolean).join(' ') ? `${[user.given_name, user.family_name].filter(Boolean).join(' ')} (${user.username})` : user.username,
    user: user.username,
    app: client.name,
    time: formatTime(request.created_at),
    ip: meta.ip,
    device: meta.userAgent?.slice(0, 120) ?? 'an unknown browser',
    link,
    minutes: String(profile.link_minutes),
  };
  let delivered = false;
  if (recipient) {
    try {
      await deps.delivery.send(profile.delivery, settings, {
        to: recipient.to,
        ...(profile.delivery === 'email' ? { subject: fillTemplate(profile.subject, values) } : {}),
        text: fillTemplate(profile.message, values),
      });
      delivered = true;
    } catch (error) {
      await markUndeliverable(db, request.id);
      await audit.record({ type: 'approval.undeliverable', actor: user.username, subject: user.id, clientId, ...meta, details: { request: request.id, profile: profile.name, reason: error instanceof Error ? error.message : String(error) } });
    }
  }
  const recorded = { request: request.id, profile: profile.name, policy: decision.policy, recipient: recipient?.to ?? null, recipient_source: recipient?.source ?? null };
  if (profile.mode === 'inform') {
    // The manager is told; the user does not wait, whether or not the message could be sent.
    if (delivered || !recipient) await audit.record({ type: 'approval.informed', actor: user.username, subject: user.id, clientId, ...meta, details: recorded });
    return false;
  }
  if (!delivered) return refuse('your manager could not be reached just now. Try again in a moment.', 503);
  await audit.record({ type: 'approval.requested', actor: user.username, subject: user.id, clientId, ...meta, details: { ...recorded, expires_at: request.expires_at } });
  // The sign-in waits as long as the link lives (and a little longer, to show how it ended).
  const waitSeconds = profile.link_minutes * 60 + 300;
  await saveProgress(db, { ...progress, step: 'approval', challengeId: null }, waitSeconds);
  const remaining = details.exp - Math.floor(Date.now() / 1000);
  if (remaining < waitSeconds) await details.save(waitSeconds);
  seeOther(ctx, `/interaction/${details.uid}/approval`);
  return true;
}
