/**
 * Authentication context class references Tessera issues (advertised in discovery as
 * acr_values_supported) and the RFC 8176 amr values behind them.
 */
export const ACR = {
  /** Password only (single factor). */
  password: 'urn:tessera:acr:password',
  /** Password plus a second factor. */
  mfa: 'urn:tessera:acr:mfa',
} as const;

export const ACR_VALUES = [ACR.password, ACR.mfa];

export type AuthenticationMethod = 'pwd' | 'otp' | 'sms' | 'mfa' | 'swk' | 'hwk' | 'mca';

/** The acr earned by a set of amr values: two distinct factors make MFA. */
export function acrFor(amr: readonly AuthenticationMethod[]): string {
  return amr.includes('mfa') ? ACR.mfa : ACR.password;
}
