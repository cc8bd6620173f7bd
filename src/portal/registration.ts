import type { Db } from '../db/index.js';

/** The account portal's client_id: Tessera registers it itself, for its own issuer. */
export const ACCOUNT_CLIENT_ID = 'tessera-account';

/**
 * Registers (or re-points) the account portal's client: public with PKCE, no consent (it is
 * Tessera's own). A user's second factor is asked at every sign-in when they have one enrolled
 * (window 0), and a re-verification before a change of factors or addresses asks for it again.
 */
export async function ensureAccountClient(db: Db, issuer: string): Promise<void> {
  const metadata = {
    client_id: ACCOUNT_CLIENT_ID,
    client_name: 'Your account',
    redirect_uris: [`${issuer}/account/callback`],
    post_logout_redirect_uris: [`${issuer}/account/signed-out`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    scope: 'openid profile email',
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'ES256',
  };
  const values = { metadata: JSON.stringify(metadata), require_consent: false, mfa_required: false, mfa_max_age_seconds: 0, builtin: true };
  await db
    .insertInto('clients')
    .values({ client_id: ACCOUNT_CLIENT_ID, ...values })
    .onConflict((oc) => oc.column('client_id').doUpdateSet({ ...values, updated_at: new Date() }))
    .execute();
}
