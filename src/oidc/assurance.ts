/**
 * Authentication context class references Tessera issues (advertised in discovery as
 * acr_values_supported) and the RFC 8176 amr values behind them.
 */
export const ACR = {
  /** Password only (single factor). */
  password: 'urn:tessera:acr:password',
  /** Password plus a second factor. */
  mfa: 'urn:tessera:acr:mfa',
  /** Password plus a phishing-resistant second factor: a passkey or security key (WebAuthn). */
  phr: 'urn:tessera:acr:phr',
} as const;

export const ACR_VALUES = [ACR.password, ACR.mfa, ACR.phr];

const METHODS = ['pwd', 'otp', 'sms', 'mfa', 'swk', 'hwk', 'user', 'mca'] as const;
export type AuthenticationMethod = (typeof METHODS)[number];

export function isAuthenticationMethod(value: unknown): value is AuthenticationMethod {
  return (METHODS as readonly unknown[]).includes(value);
}

/** The acr earned by a set of amr values: two distinct factors make MFA; with a key bound to the origin, phishing-resistant MFA. */
export function acrFor(amr: readonly AuthenticationMethod[]): string {
  if (!amr.includes('mfa')) return ACR.password;
  return amr.includes('hwk') || amr.includes('swk') ? ACR.phr : ACR.mfa;
}

/** Whether an acr is multi-factor (phishing-resistant MFA is MFA too). */
export function isMultiFactorAcr(acr: unknown): boolean {
  return acr === ACR.mfa || acr === ACR.phr;
}
