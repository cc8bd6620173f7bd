import type { Db } from '../../db/index.js';

/** The admin console's client_id: Tessera registers it itself, for its own issuer. */
export const CONSOLE_CLIENT_ID = 'tessera-admin';

/** Console paths the registration names. */
export const CONSOLE_PATHS = { callback: '/admin/callback', signedOut: '/admin/signed-out' } as const;

/**
 * Registers (or re-points, when ISSUER or PORT changed) the console's client: public with PKCE,
 * no consent (it is Tessera's own), MFA required and a second factor passed at every sign-in
 * (window 0), whatever other policy says. `builtin` keeps administrators from loosening it.
 */
export async function ensureConsoleClient(db: Db, issuer: string): Promise<void> {
  const metadata = {
    client_id: CONSOLE_CLIENT_ID,
    client_name: 'Tessera admin console',
    redirect_uris: [`${issuer}${CONSOLE_PATHS.callback}`],
    post_logout_redirect_uris: [`${issuer}${CONSOLE_PATHS.signedOut}`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    scope: 'openid profile email',
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'ES256',
  };
  const values = { metadata: JSON.stringify(metadata), require_consent: false, mfa_required: true, mfa_max_age_seconds: 0, builtin: true };
  await db
    .insertInto('clients')
    .values({ client_id: CONSOLE_CLIENT_ID, ...values })
    .onConflict((oc) => oc.column('client_id').doUpdateSet({ ...values, updated_at: new Date() }))
    .execute();
}
