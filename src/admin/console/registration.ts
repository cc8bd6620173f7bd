import type { OwnClient } from '../../web/relying-party.js';

/** The admin console's client_id: Tessera registers it itself, for its own issuer. */
export const CONSOLE_CLIENT_ID = 'tessera-admin';

/** MFA is required at every console sign-in, whatever other policy says. */
export const CONSOLE_CLIENT: OwnClient = { clientId: CONSOLE_CLIENT_ID, name: 'Tessera admin console', base: '/admin', mfaRequired: true };
