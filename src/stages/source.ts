// The code to upload, read on the runner: a manifest of every file (hash and
// mode) and link, and for the files a host lacks, a gzipped tar of exactly
// those files.

import { createHash } from 'node:crypto';
import { constants, createReadStream, type Stats } from 'node:fs';
import { lstat, open, readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { join, posix, relative, resolve, sep } from 'node:path';
import { once } from 'node:events';
import { createGzip } from 'node:zlib';
import { getExecOutput } from '@actions/exec';
import { minimatch } from 'minimatch';
import type { Manifest } from '../remote/release.js';

export type { Manifest };
import { Header, Pax } from 'tar';

/** Never uploaded: VCS data, caches, local virtualenvs, our own metadata. */
export const ALWAYS_EXCLUDED = [
  '.git',
  '.hg',
  '.svn',
  'node_modules',
  '__pycache__',
  '.venv',
  'venv',
  '.metalship',
  '.mypy_cache',
  '.pytest_cache',
  '.env',
];

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'neither a file, a directory nor a link';
}

/** Longest chain of links the kernel follows (Linux's MAXSYMLINKS). */
const MAX_LINK_HOPS = 40;

/**
 * Why the link at `rel` (relative to root) must not be deployed, or null. Its
 * target is walked the way the kernel walks it, part by part, following every
 * link on the way, so `a/up/../etc` goes through `up` and not around it. The
 * source root is the release root on the host, where a shared path is a link
 * out of the release (into {app-root}/shared) and the always-excluded names
 * (.env, .venv, .metalship, ...) are the app's secrets and metalship's own.
 */
async function linkProblem(root: string, rel: string, sharedPaths: string[]): Promise<string | null> {
  const target = await readlink(join(root, rel));
  if (target.startsWith('/')) return `is a link to the absolute path ${target}`;
  const at = rel.split('/').slice(0, -1);
  const todo = target.split('/');
  let hops = 0;
  /** How deep `at` was when the walk entered a shared path (it then continues on the host only). */
  let sharedDepth: number | null = null;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (sharedDepth !== null && at.length <= sharedDepth)
        return `leads through the shared path ${at.slice(0, sharedDepth).join('/')} and back up out of it (on the host that path is a link into {app-root}/shared)`;
      if (at.length === 0) return `leads outside the source directory (${target})`;
      at.pop();
      continue;
    }
    at.push(part);
    const path = at.join('/');
    if (ALWAYS_EXCLUDED.includes(part)) return `leads into ${path}, which is never deployed (${part})`;
    if (sharedDepth !== null) continue;
    if (sharedPaths.includes(path)) {
      sharedDepth = at.length;
      continue;
    }
    let st: Stats;
    try {
      st = await lstat(join(root, path));
    } catch {
      // A directory the host makes to hold a shared path; else missing there too, a link to nowhere.
      if (sharedPaths.some((p) => p.startsWith(path + '/'))) continue;
      return null;
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_LINK_HOPS) return 'is a loop of links';
      const next = await readlink(join(root, path));
      if (next.startsWith('/')) return `leads through ${path}, a link to the absolute path ${next}`;
      at.pop();
      todo.unshift(...next.split('/'));
    } else if (!st.isDirectory() && todo.some((p) => p !== '' && p !== '.')) {
      return null; // a file in the middle of the path: the link leads nowhere
    }
  }
  return null;
}

export async function buildManifest(
  sourceDir: string,
  exclude: string[],
  sharedPaths: string[] = [],
): Promise<Manifest> {
  const root = resolve(sourceDir);
  const realRoot = await realpath(root);
  const manifest: Manifest = { files: [], links: [] };
  const excluded = (rel: string) =>
    rel.split('/').some((part) => ALWAYS_EXCLUDED.includes(part)) ||
    exclude.some(
      (p) => minimatch(rel, p, { dot: true }) || minimatch(rel, p.replace(/\/+$/, '') + '/**', { dot: true }),
    );
  async function walk(dir: string): Promise<void> {
    const names = await readdir(dir);
    names.sort((a, b) => a.localeCompare(b));
    for (const name of names) {
      const abs = join(dir, name);
      const rel = relative(root, abs).split(sep).join('/');
      if (excluded(rel)) continue;
      // lstat, not readdir's types: those can be unknown, and a link is never followed here.
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        const problem = (await linkProblem(root, rel, sharedPaths)) ?? (await outsideOnRunner(abs));
        if (problem)
          throw new Error(
            `source file ${rel} ${problem}: links must stay inside the source; remove it or exclude it`,
          );
        manifest.links.push([rel, await readlink(abs)]);
      } else if (st.isDirectory()) {
        await walk(abs);
      } else if (st.isFile()) {
        const mode = (st.mode & 0o111 ? 0o755 : 0o644).toString(8);
        manifest.files.push([rel, await sha256(abs), mode, st.size]);
      } else {
        throw new Error(
          `source file ${rel} is ${kindOf(st)}: only files, directories and links are deployed; remove it or exclude it`,
        );
      }
    }
  }
  /** The runner's own answer (realpath) for a link that resolves here: it must end inside the source. */
  async function outsideOnRunner(abs: string): Promise<string | null> {
    const real = await realpath(abs).catch(() => null);
    if (real === null || real === realRoot || real.startsWith(realRoot + sep)) return null;
    return `leads outside the source directory (to ${real})`;
  }
  await walk(root);
  if (manifest.files.length === 0)
    throw new Error(`the source directory ${sourceDir} has no files to deploy`);
  return manifest;
}

/** Appends one manifest file to a tar stream, as a regular file with the manifest's mode, or throws. */
async function packFile(root: string, entry: Manifest['files'][0], write: (b: Buffer) => Promise<void>) {
  const [path, digest, modeText, size] = entry;
  const changed = () => new Error(`source file ${path} changed while the release was being made; run again`);
  const mode = parseInt(modeText, 8);
  if (mode !== 0o644 && mode !== 0o755) throw new Error(`cannot pack ${path} with mode ${modeText}`);
  // O_NOFOLLOW: a link put in its place is refused; O_NONBLOCK: a FIFO cannot hang the open.
  const fh = await open(
    join(root, path),
    constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
  ).catch((err: NodeJS.ErrnoException) => {
    throw ['ELOOP', 'ENOENT', 'ENOTDIR'].includes(err.code ?? '') ? changed() : err;
  });
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== size) throw changed();
    const mtime = st.mtime;
    const header = new Header({
      path,
      mode,
      size,
      mtime,
      type: 'File',
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
    });
    if (header.encode()) await write(new Pax({ path, size, mtime }).encode()); // a path too long for ustar
    await write(header.block!);
    const hash = createHash('sha256');
    let read = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false, start: 0 }) as AsyncIterable<Buffer>) {
      read += chunk.length;
      if (read > size) break;
      hash.update(chunk);
      await write(chunk);
    }
    if (read !== size || hash.digest('hex') !== digest) throw changed();
    await write(Buffer.alloc((512 - (size % 512)) % 512));
  } finally {
    await fh.close();
  }
}

/**
 * A gzipped tar of the given manifest files, as one buffer (so its size is known
 * and it can be resent). The entries are made here rather than by node-tar's
 * create, which reads a path "@x" as the members of the archive x, recurses into
 * directories, stores links, hard links and special files, and takes modes from
 * the disk: each entry is a regular file of the manifest, opened without
 * following a link, with exactly the manifest's size, sha256 and mode, owned by
 * root. Anything else fails the packing before a byte is sent.
 */
export async function packFiles(sourceDir: string, manifest: Manifest, paths: string[]): Promise<Buffer> {
  if (paths.length === 0) return Buffer.alloc(0);
  const root = resolve(sourceDir);
  const files = new Map(manifest.files.map((f) => [f[0], f]));
  if (new Set(paths).size !== paths.length || paths.some((p) => !files.has(p)))
    throw new Error('packFiles: every path must be a file of the manifest, once');
  const gzip = createGzip();
  const chunks: Buffer[] = [];
  gzip.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(gzip, 'end');
  const write = async (b: Buffer) => {
    if (!gzip.write(b)) await once(gzip, 'drain');
  };
  try {
    for (const path of paths) await packFile(root, files.get(path)!, write);
    gzip.end(Buffer.alloc(1024)); // the end-of-archive blocks
  } catch (err) {
    gzip.destroy();
    throw err;
  }
  await ended;
  return Buffer.concat(chunks);
}

/** Key of a virtualenv: the same requirements, interpreter and pip options give the same environment. */
/**
 * Key of a virtualenv: the same requirements, interpreter and pip options give
 * the same environment. "The requirements" are the file and everything of the
 * source it brings in: nested -r/-c files and local packages (a directory or an
 * archive in the source), so a changed local package builds a new venv.
 */
export async function venvKey(
  sourceDir: string,
  requirements: string,
  parts: string[],
  manifest: Manifest,
): Promise<string> {
  const hash = createHash('sha256');
  if (requirements) {
    const seen = new Set<string>();
    const include = async (file: string): Promise<void> => {
      if (seen.has(file)) return;
      seen.add(file);
      let text: string;
      try {
        text = await readFile(join(sourceDir, file), 'utf8');
      } catch {
        throw new Error(
          `the requirements file ${file} does not exist in ${sourceDir} (set requirements: '' for none)`,
        );
      }
      hash.update(`\0${file}\0${text}`);
      for (const line of text.split(/\r?\n/)) {
        const words = line
          .replace(/(^|\s)#.*$/, '')
          .trim()
          .split(/\s+/);
        const nested = /^(-r|-c|--requirement|--constraint)(=(.*))?$/.exec(words[0] ?? '');
        if (nested) {
          const target = nested[3] ?? words[1];
          if (target) await include(posix.normalize(posix.join(posix.dirname(file), target)));
          continue;
        }
        // A local package: pip resolves it from the working directory, the source's root.
        const local = (words[0] === '-e' || words[0] === '--editable' ? words[1] : words[0]) ?? '';
        const where = local.replace(/^file:(\/\/)?/, '');
        if (!/^(\.{1,2}\/|\/)/.test(where) && !local.startsWith('file:')) continue;
        const rel = posix.normalize(where.replace(/^\.\//, ''));
        for (const [p, digest] of manifest.files)
          if (p === rel || p.startsWith(rel.replace(/\/?$/, '/'))) hash.update(`\0${p}\0${digest}`);
      }
    };
    await include(requirements);
  }
  hash.update('\0' + parts.join('\0'));
  return 'py-' + hash.digest('hex').slice(0, 16);
}

/**
 * The commit the source is: GITHUB_SHA on GitHub, else the HEAD of the git work
 * tree the source directory is in; empty when neither tells (no git, not a
 * checkout, a tree git refuses as another user's).
 */
export async function sourceRevision(
  sourceDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  if (env.GITHUB_SHA) return env.GITHUB_SHA;
  try {
    const out = await getExecOutput(
      'git',
      // No fsmonitor hook from the checkout's own config: reading HEAD runs nothing of the repository's.
      ['-c', 'core.fsmonitor=false', '-C', sourceDir, 'rev-parse', '--verify', '--quiet', 'HEAD'],
      { silent: true, ignoreReturnCode: true },
    );
    const sha = out.stdout.trim();
    return out.exitCode === 0 && /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(sha) ? sha : '';
  } catch {
    return ''; // no git on this machine
  }
}
