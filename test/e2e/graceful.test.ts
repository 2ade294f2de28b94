// Graceful stops, proven on a real host: when a deploy or a rollback restarts
// the api slot a slow request is still running in, the request finishes with
// 200 from the release it started on; a worker job in progress during a deploy
// finishes, exactly once, on the old release's worker while the new release's
// worker already takes jobs. The bound on a stop is 30 s in
// uvicorn where it has --timeout-graceful-shutdown (0.21+), and 35 s in
// systemd everywhere (TimeoutStopSec, then SIGKILL).
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  connectionInputs,
  e2eState,
  httpGet,
  onHost,
  outcome,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  type E2EState,
} from '../support/e2e.js';
import { debianRelease } from '../support/hosts.js';

const APP = 'graceful';
const SERVER = 'graceful.test';
let state: E2EState;
let source: string;
let host: E2EState['hosts'][0];

function inputs(extra: Record<string, string> = {}) {
  return {
    ...connectionInputs(state, [host]),
    ...sampleAppInputs(APP, source),
    // No scheduler: its jobs would queue behind the worker test's slow one.
    'scheduler-command': '',
    'server-name': SERVER,
    'verify-path': '/version',
    'expect-body': '{release}',
    ...extra,
  };
}

async function deploy(version: string): Promise<string> {
  await writeFile(path.join(source, 'version.py'), `VERSION = "${version}"\n`);
  const r = await runBundle('deploy', inputs());
  expect(outcome(r)).toBe('succeeded');
  return r.outputs['release-id']!;
}

async function rollback(releaseId: string): Promise<void> {
  const r = await runBundle('rollback', { ...inputs(), 'release-id': releaseId });
  expect(outcome(r)).toBe('succeeded');
}

async function serving(): Promise<string> {
  return (JSON.parse((await httpGet(host.address, '/version', SERVER)).body) as { release: string }).release;
}

interface Held {
  http: number;
  release?: string;
  version?: string;
  /** It ended because the test let it go, not because its time ran out. */
  until?: boolean;
}

/**
 * A request held open in the serving slot until its slot is told to stop, then
 * let go: it proves the stop waited for it, whatever the machine's speed. `during`
 * runs the deploys or rollbacks meant to restart that slot. Resolves with the
 * response and whether the slot was seen stopping while the request was held.
 */
async function heldThrough(
  during: () => Promise<void>,
): Promise<{ before: string; held: Held; seen: string }> {
  const before = await serving();
  const slot = (await onHost(state, host, `cat /opt/${APP}/.metalship/active-slot`)).trim();
  const token = `hold-${Date.now()}`;
  const file = `/opt/${APP}/releases/${before}/${token}`;
  const response = httpGet(host.address, `/slow?seconds=120&until=${token}`, SERVER, 180000).then(
    (r): Held => {
      if (r.status !== 200) return { http: r.status };
      const { release, version, until } = JSON.parse(r.body) as Omit<Held, 'http'>;
      return { http: r.status, release, version, until };
    },
  );
  await new Promise((r) => setTimeout(r, 500));
  // On the host: wait until the slot is stopping, then let the request go (a dot a second keeps the SSH session alive).
  const watcher = onHost(
    state,
    host,
    `for i in $(seq 1500); do s=$(systemctl is-active ${APP}-api@${slot}.service); ` +
      `if [ "$s" = deactivating ]; then touch ${file}; echo SEEN-STOPPING; exit 0; fi; ` +
      `[ $((i % 10)) = 0 ] && echo .; sleep 0.1; done; touch ${file}; echo NEVER-STOPPED`,
  );
  await during();
  const seen = (await watcher).includes('SEEN-STOPPING') ? 'stopping' : 'never stopped';
  return { before, held: await response, seen };
}
beforeAll(async () => {
  state = e2eState();
  host = state.hosts[2] ?? state.hosts[0]!;
  source = await sampleAppCopy(APP);
  await onHost(
    state,
    host,
    `mkdir -p /opt/${APP} && printf 'REDIS_URL=redis://127.0.0.1:6379/4\\n' > /opt/${APP}/.env && redis-cli -n 4 flushdb >/dev/null`,
  );
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

const ids: string[] = [];

test('a request in flight when a deploy restarts its slot finishes with 200 from its own release', async () => {
  ids.push(await deploy('g1'), await deploy('g2'));
  // g3 starts in the other slot; g4 then restarts the slot the request is in.
  const { before, held, seen } = await heldThrough(async () => {
    ids.push(await deploy('g3'), await deploy('g4'));
  });
  expect(before).toBe(ids[1]);
  expect(seen).toBe('stopping');
  expect(held).toEqual({ http: 200, release: ids[1], version: 'g2', until: true });
  expect(await serving()).toBe(ids[3]);
});

test('a request in flight when a rollback restarts its slot finishes with 200 from its own release', async () => {
  // Back to g3 (the warm standby: nothing stops), then to g2, which restarts g4's slot.
  const { before, held, seen } = await heldThrough(async () => {
    await rollback(ids[2]!);
    expect(await serving()).toBe(ids[2]);
    await rollback(ids[1]!);
  });
  expect(before).toBe(ids[3]);
  expect(seen).toBe('stopping');
  expect(held).toEqual({ http: 200, release: ids[3], version: 'g4', until: true });
  expect(await serving()).toBe(ids[1]);
});

test("a worker job in progress during a deploy finishes, exactly once, on the old release's worker; the new release's worker takes jobs meanwhile, and the deploy does not wait", async () => {
  const token = `hold-${Date.now()}`;
  const job = `hold:${token}`;
  const quick = `quick-${token}`;
  const redis = (cmd: string) => onHost(state, host, `redis-cli -n 4 ${cmd}`);
  const before = Number((await redis(`get ${APP}:done`)).trim() || 0);
  const oldRelease = await serving();
  const oldWorker = `${APP}-worker@${oldRelease}.service`;
  const oldPid = (await onHost(state, host, `systemctl show -p MainPID --value ${oldWorker}`)).trim();
  expect(oldPid).not.toBe('0');
  await redis(`lpush ${APP}:jobs ${job} >/dev/null`);
  // Taken: the queue is empty and the job is in progress until the test lets it go.
  await onHost(
    state,
    host,
    `for i in $(seq 300); do [ "$(redis-cli -n 4 llen ${APP}:jobs)" = 0 ] && exit 0; sleep 0.1; done; ` +
      `systemctl status --no-pager ${oldWorker} >&2; journalctl --namespace=+${APP} -u ${oldWorker} -n 20 --no-pager -o cat >&2; exit 1`,
  );
  try {
    // The deploy ends with the job still held: it never waited for the old worker.
    const newRelease = await deploy('g5');
    ids.push(newRelease);
    const newWorker = `${APP}-worker@${newRelease}.service`;
    expect(await onHost(state, host, `systemctl is-active ${oldWorker} ${newWorker} || true`)).toBe(
      'deactivating\nactive\n',
    );
    // The new release's worker takes a job while the old one still finishes its own.
    await redis(`lpush ${APP}:jobs ${quick} >/dev/null`);
    await onHost(
      state,
      host,
      `for i in $(seq 300); do redis-cli -n 4 lrange ${APP}:results 0 -1 | grep -qx ${quick} && exit 0; sleep 0.1; done; exit 1`,
    );
    expect(
      await onHost(
        state,
        host,
        `journalctl --namespace=${APP} _SYSTEMD_UNIT=${newWorker} --no-pager -o cat | grep -c 'processed job ${quick}'`,
      ),
    ).toBe('1\n');
    expect((await onHost(state, host, `systemctl is-active ${oldWorker} || true`)).trim()).toBe(
      'deactivating',
    );
  } finally {
    await onHost(state, host, `touch /opt/${APP}/releases/${oldRelease}/${token}`);
  }
  // Let go, the job finishes and the old worker exits.
  await onHost(
    state,
    host,
    `for i in $(seq 300); do systemctl is-active -q ${oldWorker} || exit 0; sleep 0.1; done; exit 1`,
  );
  expect(Number((await redis(`get ${APP}:done`)).trim())).toBe(before + 2);
  const results = (await redis(`lrange ${APP}:results 0 -1`)).split('\n');
  expect(results.filter((r) => r === job)).toHaveLength(1);
  // The old worker was told to stop while the job ran, and finished it before exiting.
  const log = await onHost(
    state,
    host,
    `journalctl --namespace=${APP} _PID=${oldPid} --no-pager -o cat | grep -E 'stop requested|processed job ${job}'`,
  );
  expect(log).toMatch(new RegExp(`stop requested[^\\n]*\\n[^\\n]*processed job ${job}`));
});

test("a rollback to the release just left, while its worker still finishes a job, waits for that job and succeeds: the job runs once, that release's worker starts after it", async () => {
  const token = `hold-back-${Date.now()}`;
  const job = `hold:${token}`;
  const redis = (cmd: string) => onHost(state, host, `redis-cli -n 4 ${cmd}`);
  const before = Number((await redis(`get ${APP}:done`)).trim() || 0);
  const left = await serving();
  const leftWorker = `${APP}-worker@${left}.service`;
  await redis(`lpush ${APP}:jobs ${job} >/dev/null`);
  await onHost(
    state,
    host,
    `for i in $(seq 300); do [ "$(redis-cli -n 4 llen ${APP}:jobs)" = 0 ] && exit 0; sleep 0.1; done; exit 1`,
  );
  let back: ReturnType<typeof runBundle> | null = null;
  try {
    const next = await deploy('g6');
    ids.push(next);
    expect((await onHost(state, host, `systemctl is-active ${leftWorker} || true`)).trim()).toBe(
      'deactivating',
    );
    // Back to the release just left: its worker can start only once its job is done,
    // which takes longer than the check's own verify-timeout here.
    back = runBundle('rollback', { ...inputs(), 'release-id': left, 'verify-timeout': '3' });
    await onHost(
      state,
      host,
      `for i in $(seq 600); do systemctl list-jobs --no-legend ${leftWorker} | grep -q . && exit 0; sleep 0.1; done; exit 1`,
    );
    await onHost(state, host, 'sleep 6');
  } finally {
    await onHost(state, host, `touch /opt/${APP}/releases/${left}/${token}`);
  }
  const r = await back!;
  if (r.code !== 0) process.stdout.write(r.stdout);
  expect(outcome(r)).toBe('succeeded');
  expect(r.stdout).toContain(`${leftWorker}: its earlier run is still stopping`);
  expect(await serving()).toBe(left);
  expect((await onHost(state, host, `cat /opt/${APP}/releases/${left}/.metalship/status`)).trim()).toBe(
    'ready',
  );
  expect((await onHost(state, host, `systemctl is-active ${leftWorker} || true`)).trim()).toBe('active');
  expect(Number((await redis(`get ${APP}:done`)).trim())).toBe(before + 1);
  expect((await redis(`lrange ${APP}:results 0 -1`)).split('\n').filter((r) => r === job)).toHaveLength(1);
});

test("a stop's bound: systemd kills after 35 s everywhere, uvicorn cuts at 30 s where it can", async () => {
  const unit = `${APP}-api@blue.service ${APP}-api@green.service ${APP}-worker@${await serving()}.service`;
  const out = await onHost(state, host, `systemctl show -p TimeoutStopUSec -p KillMode --value ${unit}`);
  expect(out.trim().split('\n').filter(Boolean)).toEqual(Array(3).fill(['35s', 'mixed']).flat());
  const args = await onHost(
    state,
    host,
    `ps -o args= -p "$(systemctl show -p MainPID --value ${APP}-api@$(cat /opt/${APP}/.metalship/active-slot 2>/dev/null || echo blue).service)"`,
  );
  expect(args).toMatch(/uvicorn/);
  if (debianRelease() === 'trixie') expect(args).toContain('--timeout-graceful-shutdown 30');
});
