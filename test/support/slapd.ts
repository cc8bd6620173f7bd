import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client } from 'ldapts';
import { unusedPort } from './ports.js';

export const SLAPD = process.env.SLAPD_PATH ?? '/usr/sbin/slapd';
export const SUFFIX = 'dc=example,dc=test';
export const READER = { dn: `cn=reader,${SUFFIX}`, password: 'reader-secret' };

/** A user entry of the throwaway directory. */
export interface Person {
  uid: string;
  password: string;
  cn: string;
  sn: string;
  givenName?: string;
  mail?: string;
  mobile?: string;
  /** The uid of the manager, turned into their DN. */
  manager?: string;
  /** A raw manager value (e.g. a DN that names no entry). */
  managerDn?: string;
  /** More values of uid on the same entry. */
  otherUids?: string[];
  /** The entry's RDN, when it is not uid=<uid>. */
  rdn?: string;
}

export interface Slapd {
  url: string;
  port: number;
  /** With TLS: the ldaps:// address and the certificate (self-signed for 127.0.0.1) to trust. */
  ldapsUrl: string | null;
  certificate: string | null;
  dnOf(uid: string): string;
  /** Stops the server (for "directory down"); start() brings it back on the same port with the same data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its files. */
  close(): Promise<void>;
}

/**
 * A real OpenLDAP server (Debian's slapd) on a loopback port, with a throwaway configuration and
 * database: a service account that may read the people, and the people given.
 */
export async function startSlapd(people: Person[], options: { tls?: boolean } = {}): Promise<Slapd> {
  if (!existsSync(SLAPD)) throw new Error(`slapd not found at ${SLAPD}: apt-get install -y slapd (or set SLAPD_PATH)`);
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-slapd-'));
  mkdirSync(path.join(dir, 'db'));
  const port = await unusedPort();
  const tlsPort = options.tls ? await unusedPort() : null;
  let certificate: string | null = null;
  if (options.tls) {
    // A self-signed certificate for 127.0.0.1, made with Debian's openssl.
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`openssl could not make a certificate: ${made.stderr}`);
    certificate = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  }
  const admin = { dn: `cn=admin,${SUFFIX}`, password: 'admin-secret' };
  writeFileSync(path.join(dir, 'slapd.conf'), [
    'include /etc/ldap/schema/core.schema',
    'include /etc/ldap/schema/cosine.schema',
    'include /etc/ldap/schema/inetorgperson.schema',
    `pidfile ${path.join(dir, 'slapd.pid')}`,
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    'database mdb',
    'maxsize 10485760',
    `suffix "${SUFFIX}"`,
    `rootdn "${admin.dn}"`,
    `rootpw ${admin.password}`,
    `directory ${path.join(dir, 'db')}`,
    ...(options.tls ? [`TLSCertificateFile ${path.join(dir, 'cert.pem')}`, `TLSCertificateKeyFile ${path.join(dir, 'key.pem')}`] : []),
    'access to attrs=userPassword by self write by anonymous auth by * none',
    `access to * by dn.exact="${READER.dn}" read by self read by * none`,
    '',
  ].join('\n'));
  const url = `ldap://127.0.0.1:${port}`;
  let child: ChildProcess | null = null;

  async function start(): Promise<void> {
    const listen = [`${url}/`, ...(tlsPort ? [`ldaps://127.0.0.1:${tlsPort}/`] : [])].join(' ');
    const proc = spawn(SLAPD, ['-f', path.join(dir, 'slapd.conf'), '-h', listen, '-d', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child = proc;
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode !== null) throw new Error(`slapd exited (${proc.exitCode}): ${stderr.slice(0, 500)}`);
      const up = await new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.on('error', () => resolve(false));
      });
      if (up) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`slapd did not listen on ${port}: ${stderr.slice(0, 500)}`);
  }

  async function stop(): Promise<void> {
    const proc = child;
    child = null;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  }

  await start();
  const dnOf = (uid: string) => `uid=${uid},ou=people,${SUFFIX}`;
  const client = new Client({ url });
  await client.bind(admin.dn, admin.password);
  await client.add(SUFFIX, { objectClass: ['dcObject', 'organization'], dc: 'example', o: 'Example' });
  await client.add(`ou=people,${SUFFIX}`, { objectClass: 'organizationalUnit', ou: 'people' });
  await client.add(READER.dn, { objectClass: ['organizationalRole', 'simpleSecurityObject'], cn: 'reader', userPassword: READER.password });
  for (const p of people) {
    await client.add(p.rdn ? `${p.rdn},ou=people,${SUFFIX}` : dnOf(p.uid), {
      objectClass: 'inetOrgPerson',
      uid: [p.uid, ...(p.otherUids ?? [])],
      cn: p.cn,
      sn: p.sn,
      userPassword: p.password,
      ...(p.givenName ? { givenName: p.givenName } : {}),
      ...(p.mail ? { mail: p.mail } : {}),
      ...(p.mobile ? { mobile: p.mobile } : {}),
      ...(p.manager ? { manager: dnOf(p.manager) } : p.managerDn ? { manager: p.managerDn } : {}),
    });
  }
  await client.unbind();
  return {
    url,
    port,
    ldapsUrl: tlsPort ? `ldaps://127.0.0.1:${tlsPort}` : null,
    certificate,
    dnOf,
    stop,
    start,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
