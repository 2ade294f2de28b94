// The typed settings every provision item is built from (validated inputs plus
// what the stage knows about the host: its layout and roles).

import type { BalancerMember } from '../balancer.js';
import type { Layout } from '../layout.js';
import type { Topology } from '../../inputs/hosts.js';
import type { PushKey, PushTarget } from '../offsite.js';
import type { Elsewhere } from './in-use.js';
import type { ServiceTls } from './service-tls.js';

export interface ProvisionSettings {
  layout: Layout;
  check: boolean;
  user: string;
  roles: { worker: boolean; scheduler: boolean };
  appModule: string;
  uvicornArgs: string[];
  workerCommand: string[];
  unitsReady: 'stable' | 'notify';
  schedulerCommand: string[];
  healthPath: string;
  /** A load balancer host (roles=lb): nginx in front of these app hosts, and no app of its own. */
  balancer: BalancerMember[] | null;
  /** This host is the app's database, Redis or backup host (roles=db, roles=redis, roles=backup): that and no app. */
  serves: { db: boolean; redis: boolean; backup: boolean };
  /**
   * The backup copies. On a host that takes backups (pusher): push, where to
   * (null: there is no backup host, the push goes; undefined: the backup host
   * is not in this run, left as it is). On the backup host: receive, the
   * pushers' public keys (undefined: not every pusher is in this run, left as
   * they are).
   */
  offsite: { pusher: boolean; push?: PushTarget | null; receive?: PushKey[] };
  /**
   * On a db or redis host: the logins the app hosts' serving services use,
   * read by the runner before the items run (null: none read, no such host).
   */
  elsewhere: Elsewhere | null;
  /** Where the app's database and Redis are when on hosts of their own, and the app hosts' addresses. */
  topology: Topology;
  system: { enabled: boolean; securityUpdates: boolean };
  firewall: { enabled: boolean; allow: string[] };
  ssh: { enabled: boolean; rootLogin: 'prohibit-password' | 'no' };
  deployUser: { name: string; keys: string[] } | null;
  python: { install: 'system' | 'pyenv'; version: string };
  /** .env text; '' leaves .env as it is. */
  env: string;
  /** serverName: the site's server_name when there are no domains ('_': the default server). */
  nginx: { enabled: boolean; staticDir: string; serverName: string };
  tls: { domains: string[]; email: string; server: string; caBundle: string };
  postgresql: {
    enabled: boolean;
    database: string;
    /** The owner of the database and of what the app creates. */
    user: string;
    /** The role db-password is set on: user, or a member of it whose sessions SET ROLE user. */
    loginUser: string;
    /** While rotating: the role the services log in as now, whose password is kept ('' when not rotating). */
    previousUser: string;
    password: string;
    remoteCidrs: string[];
    backupDir: string;
    keepDays: number;
    schedule: string;
    /** The db host's certificate when the app's database is on one (read by the runner), else null. */
    tls: ServiceTls | null;
  };
  redis: {
    enabled: boolean;
    user: string;
    password: string;
    /** While rotating: the old password, still accepted ('' when not rotating). */
    previousPassword: string;
    maxmemory: string;
    memoryPercent: number;
    /** The redis host's certificate when the app's Redis is on one (read by the runner), else null. */
    tls: ServiceTls | null;
  };
  logs: { enabled: boolean };
  monitoring: { pingUrl: string; pingPath: string; nodeExporter: boolean; nodeExporterListen: string };
  /** Secret URLs ('' when not given) and the thresholds of the periodic checks. */
  alerts: {
    webhook: string;
    heartbeat: string;
    diskPercent: number;
    certificateDays: number;
    restoreDays: number;
  };
}

/** nginx runs on app hosts and load balancers, not on a database, Redis or backup host. */
export function hasSite(s: Pick<ProvisionSettings, 'serves'>): boolean {
  return !s.serves.db && !s.serves.redis && !s.serves.backup;
}

/** PostgreSQL runs here: a db host, or an app host when no host has roles=db. */
export function postgresqlHere(
  s: Pick<ProvisionSettings, 'serves' | 'balancer' | 'topology' | 'postgresql'>,
): boolean {
  return s.postgresql.enabled && (s.serves.db || (appHost(s) && !s.topology.db));
}

/** Redis runs here: a redis host, or an app host when no host has roles=redis. */
export function redisHere(s: Pick<ProvisionSettings, 'serves' | 'balancer' | 'topology' | 'redis'>): boolean {
  return s.redis.enabled && (s.serves.redis || (appHost(s) && !s.topology.redis));
}

function appHost(s: Pick<ProvisionSettings, 'serves' | 'balancer'>): boolean {
  return !s.balancer && hasSite(s);
}
