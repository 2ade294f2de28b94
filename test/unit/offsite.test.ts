// roles=backup: the hosts input, what provision plans for the backup host and
// the host that pushes, and the receiver run here in a directory of its own
// (the e2e test runs it on a test host behind its restricted key).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHosts, topology, topologyProblems, type HostSpec } from '../../src/inputs/hosts.js';
import {
  RECEIVE_EXIT,
  copyVerifiedPath,
  type ReceiveLimits,
  receiverKeyLine,
  receiverProgram,
} from '../../src/remote/offsite.js';
import { planItems } from '../../src/remote/provision/index.js';
import { pushSource } from '../../src/stages/offsite.js';
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
    `restrict,from="10.1.0.5",command="/usr/local/sbin/metalship-backup-receive-shop" ssh-ed25519 ${KEY_B64} metalship-backup-push:shop:10.0.0.5_it_s`,
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
  expect(() => receiverKeyLine('shop', { key: 'ssh-rsa AAAA', from: 'x' })).toThrow(
    /not an ed25519 public key/,
  );
  expect(() =>
    receiverKeyLine('shop', {
      key: `ssh-ed25519 ${KEY_B64}`,
      from: 'x',
      address: '10.0.0.5",command="/bin/sh',
    }),
  ).toThrow(/not an IP address/);
  expect(receiverKeyLine('shop', { key: `ssh-ed25519 ${KEY_B64}`, from: 'x' })).toMatch(/^restrict,command=/);
});

test('the push key is accepted only from the address the backup host sees the pusher at, when the hosts say it', () => {
  const source = (text: string) => {
    const hosts = specs(text);
    return pushSource(hosts[0]!, hosts);
  };
  expect(source('10.0.0.5 roles=db private=10.1.0.5\n10.0.0.7 roles=backup private=10.1.0.7')).toBe(
    '10.1.0.5',
  );
  expect(source('10.0.0.5\n10.0.0.7 roles=backup')).toBe('10.0.0.5');
  expect(source('[2001:db8::5]:22\n10.0.0.7 roles=backup')).toBe('2001:db8::5');
  // Unknown: its source on the backup host's private network, or a name.
  expect(source('10.0.0.5\n10.0.0.7 roles=backup private=10.1.0.7')).toBeUndefined();
  expect(source('db.example.com\n10.0.0.7 roles=backup')).toBeUndefined();
});

describe('the receiver, run here', () => {
  let dir: string;
  let program: string;
  const DB = 'shop';
  const copies = () => join(dir, 'copies');
  function install(limits?: ReceiveLimits) {
    writeFileSync(
      program,
      receiverProgram({ app: 'shop', database: DB, backupDir: copies(), retentionDays: 30 }, limits),
      { mode: 0o755 },
    );
  }
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ms-receive-'));
    program = join(dir, 'receive');
    install();
    execFileSync('mkdir', [copies()]);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The stamp of a time `ago` seconds before now, as backup.sh writes it. */
  function stampOf(ago = 0): string {
    return new Date(Date.now() - ago * 1000)
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
  }
  const createdOf = (stamp: string) =>
    `${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}Z`;
  function manifest(
    base: string,
    data: Buffer,
    sha = createHash('sha256').update(data).digest('hex'),
    created = createdOf(base.slice(DB.length + 1, DB.length + 17)),
  ): string {
    return `{"database": "${DB}", "created": "${created}", "label": "daily", "file": "${base}.dump", "size": ${data.length}, "sha256": "${sha}", "pg_version": "16.4", "tables": {"public.items": 3}}`;
  }
  function put(command: string, input: Buffer | string, path = process.env.PATH) {
    const r = spawnSync('bash', [program], {
      input,
      env: { PATH: path, SSH_ORIGINAL_COMMAND: command },
    });
    return { code: r.status, err: r.stderr.toString() };
  }
  const push = (base: string, data: Buffer, line = manifest(base, data), path?: string) =>
    put(`put ${base}`, Buffer.concat([Buffer.from(line + '\n'), data]), path);
  /** The copies and anything left over (the receiver's lock file is its own). */
  const listing = () =>
    readdirSync(copies())
      .filter((f) => f !== '.receive.lock')
      .sort();
  const plant = (...bases: string[]) => {
    for (const b of bases) {
      writeFileSync(join(copies(), `${b}.dump`), 'x');
      writeFileSync(join(copies(), `${b}.manifest.json`), 'x');
    }
  };
  const files = (...bases: string[]) => bases.flatMap((b) => [`${b}.dump`, `${b}.manifest.json`]).sort();
  const data = Buffer.from('PGDMP fake dump bytes\n\0\x01');

  test('adds a matching copy once, refuses anything else, and prunes by the stamp', () => {
    const stamp = stampOf();
    const base = `${DB}_${stamp}_daily`;
    const old = `${DB}_20200101T000000Z_daily`;
    plant(old);
    expect(push(base, data)).toMatchObject({ code: 0 });
    expect(listing()).toEqual(files(base));
    expect(readFileSync(join(copies(), `${base}.dump`))).toEqual(data);
    // The same dump again is there already (the push succeeds); another under its name is a failure.
    expect(push(base, data).code).toBe(RECEIVE_EXIT.exists);
    expect(push(base, Buffer.from('other')).code).toBe(RECEIVE_EXIT.failed);
    expect(readFileSync(join(copies(), `${base}.dump`))).toEqual(data);
    const bad = `${DB}_${stampOf(60)}_daily`;
    expect(push(bad, data, manifest(bad, data, 'a'.repeat(64))).code).toBe(RECEIVE_EXIT.mismatch);
    expect(push(bad, data.subarray(1), manifest(bad, data)).code).toBe(RECEIVE_EXIT.mismatch);
    for (const command of [
      '',
      'bash',
      `cat ${base}.dump`,
      `get ${base}`,
      `put ../${base}`,
      `put ${base}/x`,
      `put other_${stamp}_daily`,
      `put ${DB}_${stamp}_forged`,
      `put ${base}\nid`,
      'internal-sftp',
    ])
      expect(put(command, '').code).toBe(RECEIVE_EXIT.refused);
    expect(listing()).toEqual(files(base));
  });

  test('takes only a real stamp of the last day, with created equal to it; prunes any other, never the newest real one', () => {
    for (const stamp of [
      '20991231T000000Z',
      '20261399T996199Z',
      '20260230T000000Z',
      stampOf(-3600),
      stampOf(2 * 86400),
    ]) {
      const b = `${DB}_${stamp}_daily`;
      expect(push(b, data, manifest(b, data, undefined, createdOf(stamp))).code).toBe(RECEIVE_EXIT.refused);
    }
    const b = `${DB}_${stampOf()}_daily`;
    expect(push(b, data, manifest(b, data, undefined, '2099-12-31T00:00:00Z')).code).toBe(
      RECEIVE_EXIT.mismatch,
    );
    expect(listing()).toEqual([]);
    // Planted (by an older receiver): a future copy, an impossible one, and an old real one, the newest real.
    const future = `${DB}_20991231T000000Z_daily`;
    const invalid = `${DB}_20261399T996199Z_evil`;
    const old = `${DB}_20200101T000000Z_daily`;
    plant(future, invalid, old);
    expect(push(b, data, manifest(b, data, 'a'.repeat(64))).code).toBe(RECEIVE_EXIT.mismatch);
    expect(listing()).toEqual(files(old));
    expect(push(b, data).code).toBe(0);
    expect(listing()).toEqual(files(b));
  });

  test('reads the whole manifest line strictly', () => {
    const b = `${DB}_${stampOf()}_daily`;
    const good = manifest(b, data);
    for (const line of [
      good.replace(/}$/, ', "extra": 1}'),
      good + ' trailing',
      good.replace('"tables": {"public.items": 3}', '"tables": {"public.items": "3"}'),
      good.replace('"pg_version": "16.4"', '"pg_version": 16'),
      good.replace(`"size": ${data.length}`, `"size": ${data.length}.0`),
      good.replace('"label": "daily"', '"label": "daily", "label": "daily"'),
      good.replace(/, "tables": .*}$/, ', "tables": {"a": 1}, "database": "other"}'),
      good.replace(/, "tables": .*$/, ', "tables": {"a": NaN}}'),
    ])
      expect(push(b, data, line).code).toBe(RECEIVE_EXIT.mismatch);
    expect(listing()).toEqual([]);
  });

  test('a copy it could not store fails the push; exists only for the same dump', () => {
    const fake = mkdtempSync(join(dir, 'bin-'));
    writeFileSync(join(fake, 'ln'), '#!/bin/sh\necho "ln: failed" >&2\nexit 1\n', { mode: 0o755 });
    const b = `${DB}_${stampOf()}_daily`;
    expect(push(b, data, undefined, `${fake}:${process.env.PATH}`).code).toBe(RECEIVE_EXIT.failed);
    expect(listing()).toEqual([]);
    execFileSync('mkdir', [join(copies(), `${b}.dump`)]);
    expect(push(b, data).code).toBe(RECEIVE_EXIT.failed);
  });

  test('keeps at most so many copies and leaves the free space floor', () => {
    install({ maxCopies: 2, minFreeMb: 0 });
    const [a, b, c] = [600, 300, 0].map((ago) => `${DB}_${stampOf(ago)}_daily`);
    expect(push(a!, data).code).toBe(0);
    expect(push(b!, data).code).toBe(0);
    expect(push(c!, data).code).toBe(RECEIVE_EXIT.full);
    install({ maxCopies: 10, minFreeMb: 1024 * 1024 * 1024 });
    expect(push(c!, data)).toMatchObject({ code: RECEIVE_EXIT.full, err: expect.stringMatching(/MB free/) });
    expect(listing()).toEqual(files(a!, b!));
    // A copy arriving takes what it announced (in its partial's name) but has not written yet.
    install({ maxCopies: 10, minFreeMb: 0 });
    const arriving = `.${DB}_${stampOf(100)}_daily.dump.${10 ** 14}.a1b2c3.partial`;
    writeFileSync(join(copies(), arriving), 'x');
    expect(push(c!, data)).toMatchObject({ code: RECEIVE_EXIT.full, err: expect.stringMatching(/arriving/) });
    rmSync(join(copies(), arriving));
    expect(push(c!, data).code).toBe(0);
  });

  test('concurrent puts keep the cap: the checks and the copies arriving are counted under one lock', async () => {
    install({ maxCopies: 6, minFreeMb: 0 });
    // A dump of some size: the old receiver's window between its checks and its link.
    const big = Buffer.alloc(4 << 20, 7);
    const bases = Array.from({ length: 24 }, (_, i) => `${DB}_${stampOf(i * 10)}_daily`);
    const codes = await Promise.all(
      bases.map(
        (b) =>
          new Promise<number | null>((resolve) => {
            const child = spawn('bash', [program], {
              env: { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: `put ${b}` },
              stdio: ['pipe', 'ignore', 'ignore'],
            });
            child.on('close', resolve);
            // A refused put exits before it reads the dump.
            child.stdin.on('error', () => {});
            child.stdin.end(Buffer.concat([Buffer.from(manifest(b, big) + '\n'), big]));
          }),
      ),
    );
    const stored = listing().filter((f) => f.endsWith('.dump'));
    expect(stored).toHaveLength(6);
    expect(codes.filter((c) => c === 0)).toHaveLength(stored.length);
    expect(codes.filter((c) => c !== 0).every((c) => c === RECEIVE_EXIT.full)).toBe(true);
    // Nothing half-written is left.
    expect(listing().filter((f) => f.endsWith('.partial'))).toEqual([]);
  });
});
