// The real CouchDB 3.5 data directories (test/fixtures/couchdb-3.5, copied from the shared fixtures)
// and what each holds.
import { createReadStream, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar';
import { DecompressStream } from 'zstd-napi';

export const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/couchdb-3.5');
export const VERSIONS = ['v1', 'v2', 'v3'] as const;
export type Version = (typeof VERSIONS)[number];

export interface ExpectedFile {
  path: string;
  size: number;
  inode: number;
  mtime: number;
  sha256: string;
}

export function expectedFiles(v: Version): ExpectedFile[] {
  return readFileSync(path.join(FIXTURES, `files-${v}.txt`), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [p, size, inode, mtime, sha256] = l.split('\t');
      return { path: p!, size: Number(size), inode: Number(inode), mtime: Number(mtime), sha256: sha256! };
    });
}

/** Extracts datadir-vN into dir (created). */
export async function extractDatadir(v: Version, dir: string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  await tar.x({ file: path.join(FIXTURES, `datadir-${v}.tar.gz`), cwd: dir, preserveOwner: false });
  return dir;
}

/** Extracts the benchmark data directory (tar.zst) into dir. */
export async function extractBenchDatadir(dir: string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  await pipeline(createReadStream(path.join(FIXTURES, 'bench-datadir.tar.zst')), new DecompressStream(), tar.x({ cwd: dir, preserveOwner: false }));
  return dir;
}
