// roles=backup: the hosts input, what provision plans for the backup host and
// the host that pushes, and the receiver run here in a directory of its own
// (the e2e test runs it on a test host behind its restricted key).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHosts, topology, topologyProblems, type HostSpec } from '../../src/inputs/hosts.js';
import {
  RECEIVE_EXIT,
  copyVerifiedPath,
  receiverKeyLine,
  receiverProgram,
} from '../../src/remote/offsite.js';
import { planItems } from '../../src/remote/provision/index.js';
import { offsiteItem } from '../../src/remote/provision/offsite.js';
import { KEY_B64, offsiteVariants, settings, backupHostInputs } from '../support/provision.js';

const BOOKWORM = { os: 'Debian GNU/Linux 12 (bookworm)', id: 'debian', version: '12' };

function specs(text: string): HostSpec[] {
  const r = parseHosts(text);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

test('roles=backup parses alone, one host at most, and names where the copies go', () => {
  const hosts = specs('10.0.0.5\nbk.example.com:2222 roles=backup private=10.1.0.7');
  expect(topology(hosts).backup).toEqual({
    label: 'bk.example.com:2222 roles=backup private=10.1.0.7'.split(' ')[0],
    address: '10.1.0.7',
    port: 2222,
  });
  expect(parseHosts('b1 roles=backup,db')).toMatch(
    /roles=backup\) keeps the copies of a database that is elsewhere; expected roles=backup alone/,
  );
  expect(topologyProblems(specs('b1 roles=backup\nb2 roles=backup\n10.0.0.5'))[0]).toMatch(
    /gives roles=backup to 2 hosts/,
  );
});

test('the backup host runs no app, no PostgreSQL and no site; the pusher keeps its backups', () => {
  const s = settings(backupHostInputs());
  expect(s.offsite).toEqual({ pusher: true });
  expect(s.topology.backup).toEqual({ label: '10.0.0.7', address: '10.1.0.7', port: 22 });
  const [receiver] = offsiteVariants().slice(3);
  expect(receiver!.script).toContain(
    `restrict,command="/usr/local/sbin/metalship-backup-receive-shop" ssh-ed25519 ${KEY_B64} metalship-backup-push:shop:10.0.0.5_it_s`,
  );
  const backupHost = { ...s, serves: { db: false, redis: false, backup: true }, offsite: { pusher: false } };
  const plan = Object.fromEntries(planItems(backupHost, BOOKWORM).map((p) => [p.name, p]));
  for (const off of ['python', 'app', 'postgresql', 'redis', 'nginx', 'tls', 'logs', 'monitoring'])
    expect(plan[off]!.item).toBeNull();
  expect(plan.offsite!.item!.script).toContain('useradd --system');
  // Without a backup host the push goes; a pusher without its host in the run is left alone.
  expect(offsiteItem({ ...s, offsite: { pusher: true, push: null } }).item!.script).toContain(
    'backup push removed',
  );
  expect(offsiteItem({ ...s, offsite: { pusher: true } }).off).toMatch(/not in this run/);
  expect(copyVerifiedPath('/var/backups/metalship/shop')).toBe(
    '/var/backups/metalship/.shop.last-verified.json',
  );
  expect(() => receiverKeyLine('shop', 'ssh-rsa AAAA', 'x')).toThrow(/not an ed25519 public key/);
});

describe('the receiver, run here', () => {
  let dir: string;
  let program: string;
  const DB = 'shop';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ms-receive-'));
    program = join(dir, 'receive');
    writeFileSync(
      join(dir, 'receive'),
      receiverProgram({ app: 'shop', database: DB, backupDir: join(dir, 'copies'), retentionDays: 30 }),
      { mode: 0o755 },
    );
    execFileSync('mkdir', [join(dir, 'copies')]);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function manifest(
    base: string,
    data: Buffer,
    sha = createHash('sha256').update(data).digest('hex'),
  ): string {
    return `{"database": "${DB}", "created": "2026-01-01T00:00:00Z", "label": "daily", "file": "${base}.dump", "size": ${data.length}, "sha256": "${sha}", "pg_version": "16", "tables": {"public.items": 3}}`;
  }
  function put(command: string, input: Buffer | string) {
    const r = spawnSync('bash', [program], {
      input,
      env: { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: command },
    });
    return { code: r.status, err: r.stderr.toString() };
  }
  const listing = () => readdirSync(join(dir, 'copies')).sort();

  test('adds a matching copy once, refuses anything else, and prunes by the stamp', () => {
    const data = Buffer.from('PGDMP fake dump bytes\n\0\x01');
    const stamp = new Date()
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    const base = `${DB}_${stamp}_daily`;
    const old = `${DB}_20200101T000000Z_daily`;
    writeFileSync(join(dir, 'copies', `${old}.dump`), 'x');
    writeFileSync(join(dir, 'copies', `${old}.manifest.json`), 'x');
    expect(put(`put ${base}`, Buffer.concat([Buffer.from(manifest(base, data) + '\n'), data]))).toMatchObject(
      { code: 0 },
    );
    expect(listing()).toEqual([`${base}.dump`, `${base}.manifest.json`]);
    expect(readFileSync(join(dir, 'copies', `${base}.dump`))).toEqual(data);
    const other = Buffer.from('other');
    expect(put(`put ${base}`, Buffer.concat([Buffer.from(manifest(base, other) + '\n'), other])).code).toBe(
      RECEIVE_EXIT.exists,
    );
    expect(readFileSync(join(dir, 'copies', `${base}.dump`))).toEqual(data);
    const bad = `${DB}_20260102T000000Z_daily`;
    expect(
      put(`put ${bad}`, Buffer.concat([Buffer.from(manifest(bad, data, 'a'.repeat(64)) + '\n'), data])).code,
    ).toBe(RECEIVE_EXIT.mismatch);
    expect(
      put(`put ${bad}`, Buffer.concat([Buffer.from(manifest(bad, data) + '\n'), data.subarray(1)])).code,
    ).toBe(RECEIVE_EXIT.mismatch);
    for (const command of [
      '',
      'bash',
      `cat ${base}.dump`,
      `get ${base}`,
      `put ../${base}`,
      `put ${base}/x`,
      `put other_${stamp}_daily`,
      `put ${base}\nid`,
      'internal-sftp',
    ])
      expect(put(command, '').code).toBe(RECEIVE_EXIT.refused);
    expect(listing()).toEqual([`${base}.dump`, `${base}.manifest.json`]);
  });
});
