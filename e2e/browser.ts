import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Debian's Chromium, headless, with everything that would reach beyond loopback turned off. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
}

/** The newest code the dev outbox holds for a recipient, read from the outbox page as a developer would. */
export async function codeFromOutbox(browser: Browser, issuer: string, recipient: string): Promise<string> {
  const outbox = await browser.newPage();
  await outbox.goto(`${issuer}/dev/outbox`);
  const text = await outbox.locator(`article[data-recipient="${recipient}"] .outbox-body`).first().textContent();
  await outbox.close();
  return /\b(\d{6})\b/.exec(text ?? '')![1]!;
}
