/**
 * oidc-provider prints "Unsupported runtime. Use Node.js v22.x" when it loads on Node 20. Tessera
 * runs on Node 20.19+ (package.json "engines"; every suite passes there), so on every start and CLI
 * command that line would only mislead. Imported first by the entry points; drops that one line.
 */
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  if (args.length === 1 && typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
  warn(...args);
};
