// App: the .env from the env input (atomic, mode 600, the app user's) and the
// systemd units of api, worker and scheduler, from the same units module the
// deploy path uses, so a switch after provision rewrites nothing.

import { unitFiles, unitsOurs } from '../units.js';
import { sh } from '../sh.js';
import { file, itemScript, type Item } from './common.js';
import type { ProvisionSettings } from './settings.js';

export function appItem(s: ProvisionSettings): Item {
  const l = s.layout;
  const units = unitFiles(
    {
      layout: l,
      user: s.user,
      appModule: s.appModule,
      uvicornArgs: s.uvicornArgs,
      workerCommand: s.workerCommand,
      schedulerCommand: s.schedulerCommand,
    },
    s.roles,
  );
  return {
    name: 'app',
    script: itemScript(
      s.check,
      sh`if [ "$CHECK" = 1 ] && [ ! -d ${l.root} ]; then ms_changed ${'app tree ' + l.root + ' missing (users item creates it)'}; fi`,
      s.env ? file(l.env, s.env, { mode: '600', owner: `${s.user}:${s.user}`, label: '.env' }) : null,
      unitsOurs(Object.keys(units)),
      'units_changed=0',
      ...Object.entries(units).map(([name, content]) =>
        content === null
          ? sh`if [ -f ${l.unitDir}/${name} ]; then ms_changed ${'unit ' + name + ' removed (not on this host)'}; if [ "$CHECK" != 1 ]; then systemctl disable --now ${name} 2>/dev/null || true; rm -f ${l.unitDir}/${name}; fi; units_changed=1; fi`
          : file(`${l.unitDir}/${name}`, content, { label: `unit ${name}`, onChange: 'units_changed=1' }),
      ),
      'if [ "$units_changed" = 1 ] && [ "$CHECK" != 1 ]; then systemctl daemon-reload; fi',
    ),
  };
}
