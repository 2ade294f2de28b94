// App: the .env from the env input (atomic, mode 600, the app user's) and the
// systemd units of api, worker and scheduler, from the same units module the
// deploy path uses, so a switch after provision rewrites nothing.

import { unitFiles, unitsOurs, workerUnitShell } from '../units.js';
import { raw, sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export function appItem(settings: ProvisionSettings): Item {
  const layout = settings.layout;
  const render = (unitsReady: 'stable' | 'notify') =>
    unitFiles(
      {
        layout: layout,
        user: settings.user,
        appModule: settings.appModule,
        uvicornArgs: settings.uvicornArgs,
        workerCommand: settings.workerCommand,
        schedulerCommand: settings.schedulerCommand,
        unitsReady,
      },
      settings.roles,
    );
  const notify = render('notify');
  const stable = render('stable');
  // The unit names, and which are not on this host, are the same in both.
  const units = stable;
  // The worker and the scheduler run the serving release, as its record says they
  // show they started: a release whose worker sends no READY=1 must not run as a
  // notify unit (it would never count as started). No release serving: the input.
  const record = `${layout.current}/.metalship/runtime.json`;
  const servedReady = [
    sh`units_ready=${settings.unitsReady}`,
    sh`if [ -f ${record} ] && [ ! -L ${record} ]; then if grep -Fq '"units-ready": "notify"' ${record}; then units_ready=notify; else units_ready=stable; fi; fi`,
  ];
  const unitFile = (name: string, content: string) =>
    file(`${layout.unitDir}/${name}`, content, { label: `unit ${name}`, onChange: 'units_changed=1' });
  return {
    name: 'app',
    script: itemScript(
      settings.check,
      sh`if [ "$CHECK" = 1 ] && [ ! -d ${layout.root} ]; then ms_changed ${'app tree ' + layout.root + ' missing (users item creates it)'}; fi`,
      settings.env
        ? file(layout.env, settings.env, {
            mode: '600',
            owner: `${settings.user}:${settings.user}`,
            label: '.env',
          })
        : null,
      unitsOurs(Object.keys(units)),
      'units_changed=0',
      ...(Object.keys(units).some((n) => units[n] !== null && notify[n] !== stable[n]) ? servedReady : []),
      ...Object.entries(units).map(([name, content]) =>
        content === null
          ? sh`if [ -f ${layout.unitDir}/${name} ]; then ms_changed ${'unit ' + name + ' removed (not on this host)'}; if [ "$CHECK" != 1 ]; then systemctl disable --now ${name} 2>/dev/null || true; rm -f ${layout.unitDir}/${name}; fi; units_changed=1; fi`
          : notify[name] === content
            ? unitFile(name, content)
            : [
                'if [ "$units_ready" = notify ]; then',
                unitFile(name, notify[name]!),
                'else',
                unitFile(name, stable[name]!),
                'fi',
              ].join('\n'),
      ),
      units[layout.units.workerTemplate] === null ? noWorkerHere(settings) : null,
      'if [ "$units_changed" = 1 ] && [ "$CHECK" != 1 ]; then systemctl daemon-reload; fi',
    ),
  };
}

/**
 * A host without the worker role: every release's worker stops, and goes from
 * the boot (the template itself goes with the other units not on the host), as
 * does the single worker unit of metalship before worker instances.
 */
function noWorkerHere(settings: ProvisionSettings): string {
  const layout = settings.layout;
  const glob = layout.units.worker('*');
  const wants = `${layout.unitDir}/${layout.units.target}.wants/`;
  const legacy = `${layout.unitDir}/${layout.units.legacyWorker}`;
  return [
    // Any loaded but inactive (a failed one is reset: it would be listed on every run).
    sh`if [ -n "$(systemctl list-units --all --plain --no-legend --type=service ${glob} 2>/dev/null | awk '$3 != "inactive"')" ]; then ms_changed ${'workers stopped (not on this host)'}; if [ "$CHECK" != 1 ]; then systemctl stop ${glob} 2>/dev/null || true; systemctl reset-failed ${glob} 2>/dev/null || true; fi; fi`,
    sh`if [ "$CHECK" != 1 ]; then rm -f -- ${raw(workerUnitShell(layout, '*', wants))}; fi`,
    sh`if [ -f ${legacy} ]; then ms_changed ${'unit ' + layout.units.legacyWorker + ' removed (not on this host)'}; if [ "$CHECK" != 1 ]; then systemctl disable --now ${layout.units.legacyWorker} 2>/dev/null || true; rm -f ${legacy}; fi; units_changed=1; fi`,
  ].join('\n');
}
