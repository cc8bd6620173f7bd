import type { OwnClient } from '../web/relying-party.js';

/** The account portal's client_id: Tessera registers it itself, for its own issuer. */
export const ACCOUNT_CLIENT_ID = 'tessera-account';

/** A user's second factor is asked at every account sign-in when they have one (window 0). */
export const ACCOUNT_CLIENT: OwnClient = { clientId: ACCOUNT_CLIENT_ID, name: 'Your account', base: '/account', mfaRequired: false };
