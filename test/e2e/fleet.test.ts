// A fleet end to end: a load balancer host (provisioned with roles=lb) in front
// of the three shared app hosts on their private LAN. A rolling deploy in
// batches under steady load through the balancer, and a release that fails
// health on the host of the second batch.
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  E2E_INDEX,
  E2E_LAN,
  E2E_PREFIX,
  e2eState,
  httpGet,
  onHost,
  outcome,
  registerSecret,
  runBundle,
  sampleAppCopy,
  sampleAppInputs,
  setUpAppOnHost,
  type E2EState,
} from '../support/e2e.js';
import { bootHosts, shutdownHosts, type TestHost } from '../support/hosts.js';
import { startLoad } from '../support/load.js';
import { startReceiver, type Receiver } from '../support/alerts.js';

const APP = 'fleet';
const SERVER_NAME = 'fleet.test';
const LB_NAME = `${E2E_PREFIX}lb`;
let state: E2EState;
let apps: TestHost[];
let lb: TestHost;
let source: string;
let receiver: Receiver;
const ALERT_TOKEN = 'fleet-alert-token-5c2e';

function connection(): Record<string, string> {
  const lines = [
    `${lb.address} roles=lb`,
    ...apps.map((h, i) => `${h.address}${i === 0 ? ' roles=api,worker,scheduler' : ''} upstream=${h.lan}`),
  ];
  return {
    hosts: lines.join('\n'),
    'ssh-key': state.key.privateKey,
    'known-hosts': [lb, ...apps].map((h) => h.knownHosts).join('\n'),
  };
}

function deployInputs(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...connection(),
    ...sampleAppInputs(APP, source),
    'server-name': SERVER_NAME,
    'verify-path': '/version',
    'expect-body': '{release}',
    ...extra,
  };
}

/** The version the app answers; failOn: the host where it fails its checks, workerFailsOn: where its worker cannot start. */
async function setVersion(version: string, failOn?: TestHost, workerFailsOn?: TestHost): Promise<void> {
  await writeFile(path.join(source, 'version.py'), `VERSION = "${version}"\n`);
  for (const h of apps) {
    await rm(path.join(source, `FAIL_HEALTH_ON_${h.name}`), { force: true });
    await rm(path.join(source, `FAIL_WORKER_ON_${h.name}`), { force: true });
  }
  if (failOn) await writeFile(path.join(source, `FAIL_HEALTH_ON_${failOn.name}`), '');
  if (workerFailsOn) await writeFile(path.join(source, `FAIL_WORKER_ON_${workerFailsOn.name}`), '');
}

/** When requests failed: the balancer's view of it, for the test's failure message. */
async function balancerErrors(): Promise<string> {
  return onHost(
    state,
    lb,
    "grep -v 'Connection refused' /var/log/nginx/error.log | tail -n 5; echo 'refusals per second and upstream:'; grep 'Connection refused' /var/log/nginx/error.log | sed -E 's/^[0-9/]+ ([0-9:]+) .*upstream: \"http:..([0-9.:]+).*/\\1 \\2/' | uniq -c | tail -n 30",
  );
}

const balancerConf = () => onHost(state, lb, `cat /etc/nginx/conf.d/metalship-${APP}-balancer.conf`);
const currentOn = (h: TestHost) =>
  onHost(state, h, `basename "$(readlink /opt/${APP}/current)"`).then((s) => s.trim());

beforeAll(async () => {
  state = e2eState();
  apps = state.hosts;
  lb = (
    await bootHosts(
      [{ name: LB_NAME, index: E2E_INDEX + 5, lan: `${E2E_LAN.tag}:${E2E_LAN.address(10)}` }],
      state.key,
    )
  )[0]!;
  for (const h of apps) await setUpAppOnHost(state, h, APP, { redisDb: 3 });
  source = await sampleAppCopy('fleet');
  registerSecret('the fleet alert token', ALERT_TOKEN);
  // On the machine side of the balancer's veth.
  receiver = await startReceiver(`10.213.${E2E_INDEX + 5}.1`);
});
afterAll(async () => {
  await receiver?.stop();
  if (process.env.METALSHIP_KEEP_HOSTS) return;
  await shutdownHosts([LB_NAME]);
  if (source) await rm(source, { recursive: true, force: true });
});

test('provision with limit: lb sets up the balancer alone, every api host an upstream on the LAN', async () => {
  const r = await runBundle('provision', {
    ...connection(),
    app: APP,
    limit: 'lb',
    // no apt mirror reachable from a test host (provision.test.ts covers it with a local repository)
    system: 'false',
    postgresql: 'false',
    redis: 'false',
    'worker-command': 'python -m worker',
    'scheduler-command': 'python -m scheduler',
    'alert-webhook': `${receiver.base}/alert/${ALERT_TOKEN}`,
  });
  expect(outcome(r)).toBe('succeeded');
  const results = JSON.parse(r.outputs.results!) as {
    host: string;
    items: { item: string; detail: string }[];
  }[];
  expect(results.map((x) => x.host)).toEqual([`${lb.address}`]);
  const items = Object.fromEntries(results[0]!.items.map((i) => [i.item, i.detail]));
  expect(items.app).toMatch(/roles=lb/);
  const conf = await balancerConf();
  for (const h of apps)
    expect(conf).toContain(`server ${h.lan}:80 max_fails=2 fail_timeout=1s; # ${h.address}`);
  // the app hosts were not touched: no firewall came up on them
  expect(await onHost(state, apps[0]!, 'ufw status | head -1')).toMatch(/inactive/);
});

test('nginx failing on the load balancer reaches the alert webhook', async () => {
  expect(await onHost(state, lb, 'systemctl show -p OnFailure --value nginx.service')).toContain(
    `metalship-alert-${APP}@nginx.service.service`,
  );
  const from = receiver.received.length;
  try {
    await onHost(state, lb, 'kill -KILL "$(systemctl show -p MainPID --value nginx.service)"');
    let alert;
    for (let i = 0; i < 300 && !alert; i++) {
      alert = receiver
        .alerts(from)
        .find((a) => a.kind === 'unit' && a.detail.startsWith('nginx.service failed'));
      if (!alert) await onHost(state, lb, 'sleep 0.2');
    }
    expect(alert).toMatchObject({ app: APP, kind: 'unit' });
  } finally {
    // Its workers outlive the master here: systemd in these test hosts cannot kill a unit's cgroup
    // ("Failed to kill control group ... Input/output error"), so they still hold port 80.
    await onHost(
      state,
      lb,
      'pkill -KILL -x nginx; systemctl reset-failed nginx.service; systemctl start nginx.service',
    );
  }
});

const ids: Record<string, string> = {};

test('a rolling deploy in batches of two under steady load through the balancer: zero failed requests', async () => {
  await setVersion('f1');
  const first = await runBundle('deploy', deployInputs());
  expect(outcome(first)).toBe('succeeded');
  ids.f1 = first.outputs['release-id']!;

  const load = startLoad(`http://${lb.address}/version`, {
    workers: 4,
    pauseMs: 5,
    headers: { Host: SERVER_NAME },
  });
  try {
    await setVersion('f2');
    const second = await runBundle('deploy', deployInputs({ 'batch-size': '2' }));
    expect(outcome(second)).toBe('succeeded');
    ids.f2 = second.outputs['release-id']!;
    const results = JSON.parse(second.outputs.results!) as {
      host: string;
      batch: number;
      healthy: boolean;
    }[];
    expect(results.map((x) => [x.host, x.batch, x.healthy])).toEqual([
      [apps[0]!.address, 1, true],
      [apps[1]!.address, 1, true],
      [apps[2]!.address, 2, true],
    ]);
    // No host left the balancer's rotation: each one's switch drops nothing by itself.
    expect(second.stdout).not.toMatch(/out of rotation/);
    // every host started the release first, then the batches moved traffic
    expect(second.stdout).toMatch(/Start \d{8}_\d{6} on the standby slots of /);
    for (const h of apps) expect(second.summary).toContain(`| ${h.address} |`);
    for (const h of apps) expect(await currentOn(h)).toBe(ids.f2);
  } finally {
    const report = await load.stop();
    expect(report.requests).toBeGreaterThan(100);
    if (report.failed)
      console.log(`failed requests at ${report.failureTimes.join(', ')}\n${await balancerErrors()}`);
    expect(report.failures).toEqual({});
    expect(report.bodies.some((b) => b.includes(`"f2"`))).toBe(true);
    expect(report.bodies.at(-1)).toContain(ids.f2);
  }
  expect(await balancerConf()).not.toMatch(/ down;/);
});

test('a release failing health on the second batch: every host back on the previous release, the job names the host', async () => {
  await setVersion('f3', apps[1]);
  const load = startLoad(`http://${lb.address}/version`, {
    workers: 4,
    pauseMs: 5,
    headers: { Host: SERVER_NAME },
  });
  let third;
  try {
    third = await runBundle('deploy', deployInputs({ 'verify-timeout': '3' }));
  } finally {
    const report = await load.stop();
    // the failing host checked the release on its standby's socket: it never served it
    expect(report.failures).toEqual({});
  }
  expect(third.code).toBe(1);
  const f3 = third.outputs['release-id']!;
  ids.f3 = f3;
  expect(third.outputs['rolled-back']).toBe('true');
  // Every host started it first: the failing one failed its checks there, before any traffic moved.
  expect(third.stdout).toMatch(
    new RegExp(`${f3} failed verification before taking traffic: ${ids.f2} kept serving`),
  );
  expect(third.stdout).toContain(`${apps[1]!.address} is unhealthy`);
  expect(third.stdout).toMatch(/\/version answered 500/);
  // batch 3 was never switched; 1 and 2 went back
  const results = JSON.parse(third.outputs.results!) as { host: string; ok: boolean; batch?: number }[];
  expect(results.find((x) => x.host === apps[2]!.address)?.batch).toBeUndefined();
  for (const h of apps) expect(await currentOn(h)).toBe(ids.f2);
  expect(await balancerConf()).not.toMatch(/ down;/);
  expect((await onHost(state, apps[0]!, `cat /opt/${APP}/releases/${f3}/.metalship/status`)).trim()).toBe(
    'bad',
  );
  // The hosts that had started it stopped it again.
  for (const h of apps)
    expect(
      await onHost(
        state,
        h,
        `for s in blue green; do if [ "$(basename "$(readlink /opt/${APP}/slots/$s)")" = ${f3} ]; then systemctl is-active ${APP}-api@$s.service || true; fi; done`,
      ),
    ).not.toMatch(/^active$/m);
});

test('undo with if-current: nothing where that release is not current, a rolling rollback through the balancer where it is', async () => {
  const nothing = await runBundle('rollback', { ...deployInputs(), 'if-current': ids.f3! });
  expect(outcome(nothing)).toBe('succeeded');
  expect(nothing.stdout).toContain(`${ids.f3} is not current on any host: nothing to undo`);
  for (const h of apps) expect(await currentOn(h)).toBe(ids.f2);

  const load = startLoad(`http://${lb.address}/version`, {
    workers: 4,
    pauseMs: 5,
    headers: { Host: SERVER_NAME },
  });
  try {
    const undo = await runBundle('rollback', { ...deployInputs(), 'if-current': ids.f2! });
    expect(outcome(undo)).toBe('succeeded');
    expect(undo.outputs['release-id']).toBe(ids.f1);
    expect(undo.outputs['rolled-back-from']).toBe(ids.f2);
  } finally {
    const report = await load.stop();
    expect(report.failures).toEqual({});
    expect(report.bodies.at(-1)).toContain(ids.f1);
  }
  for (const h of apps) expect(await currentOn(h)).toBe(ids.f1);
});

test('a host without the api role: its api stops, its worker runs the new release, the others serve', async () => {
  await setVersion('f4');
  const hosts = apps.map(
    (h, i) => `${h.address} roles=${i === 0 ? 'api,worker,scheduler' : i === 1 ? 'api' : 'worker'}`,
  );
  const r = await runBundle('deploy', {
    ...deployInputs(),
    hosts: hosts.join('\n'),
    'known-hosts': apps.map((h) => h.knownHosts).join('\n'),
  });
  expect(outcome(r)).toBe('succeeded');
  const f4 = r.outputs['release-id']!;
  for (const h of apps) expect(await currentOn(h)).toBe(f4);
  const [, web2, workerOnly] = apps as [TestHost, TestHost, TestHost];
  expect(r.stdout).toContain(`[${workerOnly.address}] units active (no api on this host)`);
  expect(
    await onHost(state, workerOnly, `systemctl is-active ${APP}-api@blue ${APP}-api@green || true`),
  ).not.toMatch(/^active/m);
  expect((await onHost(state, workerOnly, `systemctl is-active ${APP}-worker@${f4}.service`)).trim()).toBe(
    'active',
  );
  expect(
    await onHost(
      state,
      workerOnly,
      `readlink /proc/$(systemctl show -p MainPID --value ${APP}-worker@${f4}.service)/cwd`,
    ),
  ).toContain(f4);
  // web2 lost its worker (every release's), kept its api
  expect(
    await onHost(
      state,
      web2,
      `systemctl list-units --state=active --plain --no-legend '${APP}-worker@*.service'`,
    ),
  ).toBe('');
  expect((await httpGet(web2.address, '/version', SERVER_NAME)).body).toContain(f4);
});

test("another run holding one host's lock: a run with no time to wait fails naming it and holds no other host's; a patient one waits for it, then deploys", async () => {
  const lockFile = `/opt/${APP}/.metalship/deploy.lock`;
  const holderFile = `/opt/${APP}/.metalship/lock-holder`;
  const held = apps[1]!;
  // Another run's lock on the second host, for 8 s.
  await onHost(
    state,
    held,
    `nohup sh -c 'exec 9>>${lockFile}; flock 9; echo "deploy by someone-else" > ${holderFile}; sleep 8; : > ${holderFile}' >/dev/null 2>&1 &
for i in $(seq 50); do if ! flock -n ${lockFile} true; then exit 0; fi; sleep 0.1; done; exit 1`,
  );
  await setVersion('f-lock');
  const impatient = await runBundle('deploy', deployInputs({ 'lock-timeout': '0' }));
  expect(impatient.code).toBe(1);
  expect(impatient.stdout).toMatch(/another deploy holds the lock of fleet .*someone-else/);
  for (const h of apps.filter((a) => a !== held))
    expect(await onHost(state, h, `flock -n ${lockFile} true && echo free`)).toBe('free\n');
  const patient = await runBundle('deploy', deployInputs({ 'lock-timeout': '60' }));
  expect(outcome(patient)).toBe('succeeded');
  expect(patient.stdout).toMatch(
    new RegExp(
      `\\[${held.address.replace(/\./g, '\\.')}\\] waiting for the deploy lock, held by deploy by someone-else`,
    ),
  );
  for (const h of apps) expect(await currentOn(h)).toBe(patient.outputs['release-id']);
});

test('rolling: the first batch checked whole, each later one moving once the one before answers; a worker that cannot start on the last host puts every host back', async () => {
  const before = await currentOn(apps[0]!);
  await setVersion('f-worker', undefined, apps[2]);
  const load = startLoad(`http://${lb.address}/version`, {
    workers: 4,
    pauseMs: 5,
    headers: { Host: SERVER_NAME },
  });
  let r;
  try {
    // Each worker must run 6 s to pass (units-stable-seconds): far longer than a warm standby's move.
    r = await runBundle('deploy', deployInputs({ 'units-stable-seconds': '6' }));
  } finally {
    const report = await load.stop();
    expect(report.failures).toEqual({});
  }
  expect(r.code).toBe(1);
  expect(r.outputs['rolled-back']).toBe('true');
  const id = r.outputs['release-id']!;
  const said = (h: TestHost, line: string) => r.stdout.indexOf(`[${h.address}] ${line}`);
  // The canary: batch 2 moved only once batch 1's checks had ended.
  expect(said(apps[0]!, 'CHECKS_EXIT 0')).toBeGreaterThan(-1);
  expect(said(apps[0]!, 'CHECKS_EXIT 0')).toBeLessThan(said(apps[1]!, 'MARK traffic moved'));
  // Then batch 3 moved once batch 2's api answered, while batch 2's worker was still being checked.
  expect(said(apps[1]!, 'MARK api verified')).toBeGreaterThan(-1);
  expect(said(apps[1]!, 'MARK api verified')).toBeLessThan(said(apps[2]!, 'MARK traffic moved'));
  expect(said(apps[2]!, 'MARK traffic moved')).toBeLessThan(said(apps[1]!, 'CHECKS_EXIT'));
  // Each host started its worker once its api answered.
  for (const h of apps.slice(1))
    expect(said(h, 'MARK api verified')).toBeLessThan(said(h, 'MARK worker and scheduler restarted'));
  // The last host's api passed, its worker did not: the rollout failed there, every host went back.
  expect(r.stdout).toContain(`batch 3 of 3: ${apps[2]!.address} is unhealthy`);
  expect(r.stdout).toMatch(new RegExp(`${APP}-worker@${id}\\.service: its process exited`));
  for (const h of apps) expect(await currentOn(h)).toBe(before);
  for (const h of apps) expect((await httpGet(h.address, '/version', SERVER_NAME)).body).toContain(before);
  expect((await onHost(state, apps[0]!, `cat /opt/${APP}/releases/${id}/.metalship/status`)).trim()).toBe(
    'bad',
  );
  // No host runs the failed release's worker; each runs its previous one's.
  for (const h of apps) {
    expect(
      await onHost(
        state,
        h,
        `systemctl list-units --state=active --plain --no-legend '${APP}-worker@*.service'`,
      ),
    ).toMatch(new RegExp(`^${APP}-worker@${before}\\.service`));
  }
});

test('rolling: a worker that cannot start on the first batch stops the rollout there; the other hosts never move', async () => {
  const before = await currentOn(apps[0]!);
  await setVersion('f-canary', undefined, apps[0]);
  const r = await runBundle('deploy', deployInputs());
  expect(r.code).toBe(1);
  const id = r.outputs['release-id']!;
  expect(r.stdout).toContain(`batch 1 of 3: ${apps[0]!.address} is unhealthy`);
  for (const h of apps.slice(1)) expect(r.stdout).not.toContain(`[${h.address}] MARK traffic moved`);
  for (const h of apps) expect(await currentOn(h)).toBe(before);
  // The others had started it in their standby slots only: stopped again.
  for (const h of apps.slice(1))
    expect(
      await onHost(
        state,
        h,
        `for s in blue green; do if [ "$(basename "$(readlink /opt/${APP}/slots/$s)")" = ${id} ]; then systemctl is-active ${APP}-api@$s.service || true; fi; done`,
      ),
    ).not.toMatch(/^active$/m);
});

test('rolling: a run cancelled once a later batch moved leaves that host serving the release; a re-run puts every host on one release with its worker', async () => {
  await setVersion('f-gone');
  const second = apps[1]!;
  const r = await runBundle('deploy', deployInputs(), {
    // Cancelled as the second batch's traffic moved, before its api's checks ended.
    onOutput: (out, kill) => out.includes(`[${second.address}] MARK traffic moved`) && kill(),
  });
  expect(r.code).not.toBe(0);
  const id = /Release (\d{8}_\d{6}) on /.exec(r.stdout)?.[1] ?? 'none';
  // Its traffic had moved: it serves the release (a complete one); what the run
  // still ran there was stopped when its lock was let go.
  expect(await currentOn(second)).toBe(id);
  expect((await httpGet(second.address, '/version', SERVER_NAME)).body).toContain(id);
  // The killed run's lock holders may need a moment to see it gone.
  await setVersion('f-after-gone');
  const again = await runBundle('deploy', deployInputs({ 'lock-timeout': '60' }));
  expect(outcome(again)).toBe('succeeded');
  const next = again.outputs['release-id']!;
  for (const h of apps) {
    expect(await currentOn(h)).toBe(next);
    expect(
      await onHost(
        state,
        h,
        `systemctl list-units --state=active --plain --no-legend '${APP}-worker@*.service'`,
      ),
    ).toMatch(new RegExp(`^${APP}-worker@${next}\\.service`, 'm'));
  }
});
