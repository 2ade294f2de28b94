// The code to upload, read on the runner: a manifest of every file (hash and
// mode) and, for the files a host lacks, a gzipped tar.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { minimatch } from 'minimatch';
import { create as createTar } from 'tar';

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

export interface Manifest {
  /** [path, sha256, mode (octal text), size] */
  files: [string, string, string, number][];
  /** [path, link target] */
  links: [string, string][];
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function buildManifest(sourceDir: string, exclude: string[]): Promise<Manifest> {
  const root = resolve(sourceDir);
  const manifest: Manifest = { files: [], links: [] };
  const excluded = (rel: string) =>
    rel.split('/').some((part) => ALWAYS_EXCLUDED.includes(part)) ||
    exclude.some(
      (p) => minimatch(rel, p, { dot: true }) || minimatch(rel, p.replace(/\/+$/, '') + '/**', { dot: true }),
    );
  async function walk(dir: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => a.name.localeCompare(b.name));
    for (const entry of entries) {
      const abs = join(dir, entry.name);
      const rel = relative(root, abs).split(sep).join('/');
      if (excluded(rel)) continue;
      if (entry.isSymbolicLink()) {
        const target = await readlink(abs);
        if (target.startsWith('/') || relative(root, resolve(dir, target)).startsWith('..')) {
          throw new Error(
            `source file ${rel} is a link outside the source directory (${target}); remove it or exclude it`,
          );
        }
        manifest.links.push([rel, target]);
      } else if (entry.isDirectory()) {
        await walk(abs);
      } else if (entry.isFile()) {
        const st = await lstat(abs);
        const mode = (st.mode & 0o111 ? 0o755 : 0o644).toString(8);
        manifest.files.push([rel, await sha256(abs), mode, st.size]);
      }
    }
  }
  await walk(root);
  if (manifest.files.length === 0)
    throw new Error(`the source directory ${sourceDir} has no files to deploy`);
  return manifest;
}

/** A gzipped tar of the given files, as one buffer (so its size is known and it can be resent). */
export async function packFiles(sourceDir: string, files: string[]): Promise<Buffer> {
  if (files.length === 0) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  const stream = createTar(
    { gzip: true, cwd: resolve(sourceDir), portable: true, noDirRecurse: true },
    files,
  );
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Key of a virtualenv: the same requirements, interpreter and pip options give the same environment. */
export async function venvKey(sourceDir: string, requirements: string, parts: string[]): Promise<string> {
  const hash = createHash('sha256');
  if (requirements) {
    try {
      hash.update(await readFile(join(sourceDir, requirements)));
    } catch {
      throw new Error(
        `the requirements file ${requirements} does not exist in ${sourceDir} (set requirements: '' for none)`,
      );
    }
  }
  hash.update('\0' + parts.join('\0'));
  return 'py-' + hash.digest('hex').slice(0, 16);
}
