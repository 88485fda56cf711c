// Local directory repository (file:///absolute/path).
// Durability: each object is written to a temporary name in its directory, fsynced, renamed into
// place and the directory fsynced, so a crash leaves either the whole object or none of it.
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { checkKey, ObjectNotFoundError, StorageError, type Backend, type ObjectInfo, type PutOptions, type Range } from '../backend.js';
import { syncDir } from '../../util/fs.js';

const TMP_MARK = '.tmp-';
const SYNC_STEP = 64 * 1024 * 1024;

export async function openFileBackend(url: URL): Promise<Backend> {
  if (url.host !== '' && url.host !== 'localhost') {
    throw new StorageError(`file storage URL must be file:///absolute/path, got host ${JSON.stringify(url.host)}`);
  }
  const root = decodeURIComponent(url.pathname);
  if (!path.isAbsolute(root)) throw new StorageError('file storage URL must name an absolute path');
  await fs.mkdir(root, { recursive: true }).catch((err: unknown) => {
    throw new StorageError(`cannot create repository directory ${root}: ${(err as Error).message}`, { cause: err });
  });
  return new FileBackend(root);
}

export class FileBackend implements Backend {
  readonly location: string;
  constructor(private readonly root: string) {
    this.location = `file://${root}`;
  }

  private pathOf(key: string): string {
    return path.join(this.root, ...checkKey(key).split('/'));
  }

  // Metadata is not kept: the engine stores everything it needs in the objects themselves.
  async put(key: string, body: Readable, _options?: PutOptions): Promise<ObjectInfo> {
    const target = this.pathOf(key);
    const dir = path.dirname(target);
    await fs.mkdir(dir, { recursive: true });
    const tmp = `${target}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    try {
      const fh = await fs.open(tmp, 'wx', 0o600);
      try {
        // Flush to disk in stages while writing, so the final fsync does not wait for the whole object.
        let written = 0;
        let flushedAt = 0;
        let flushing: Promise<void> | null = null;
        for await (const chunk of body as AsyncIterable<Buffer>) {
          for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off, written + off)).bytesWritten;
          written += chunk.length;
          if (written - flushedAt >= SYNC_STEP && !flushing) {
            flushedAt = written;
            flushing = fh.datasync().finally(() => (flushing = null));
          }
        }
        await flushing;
        // Data and size, which is all a reader needs; the name is made durable by the directory sync.
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, target);
      await syncDir(dir);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw new StorageError(`writing ${key} to ${this.location} failed: ${(err as Error).message}`, { cause: err });
    }
    const st = await fs.stat(target);
    return { key, size: st.size, modified: st.mtime };
  }

  async get(key: string, range?: Range): Promise<Readable> {
    const file = this.pathOf(key);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ObjectNotFoundError(this.location, key);
      throw new StorageError(`reading ${key} from ${this.location} failed: ${(err as Error).message}`, { cause: err });
    }
    const start = range?.offset ?? 0;
    const end = range?.length !== undefined ? start + range.length - 1 : undefined;
    if (end !== undefined && end < start) {
      await fh.close();
      const { Readable: R } = await import('node:stream');
      return R.from([]);
    }
    return createReadStream('', { fd: fh, start, end, highWaterMark: 64 << 10 });
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await fs.stat(this.pathOf(key));
      return st.isFile() ? { key, size: st.size, modified: st.mtime } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const found: ObjectInfo[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        const key = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(path.join(dir, e.name), key);
        } else if (e.isFile() && key.startsWith(prefix)) {
          const st = await fs.stat(path.join(dir, e.name));
          found.push({ key, size: st.size, modified: st.mtime });
        }
      }
    };
    await walk(this.root, '');
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* found;
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    await fs.rm(file, { force: true });
    // Leave no empty directories behind, up to the repository root.
    let dir = path.dirname(file);
    while (dir.startsWith(this.root) && dir !== this.root) {
      try {
        await fs.rmdir(dir);
      } catch {
        break;
      }
      dir = path.dirname(dir);
    }
  }

  async close(): Promise<void> {}
}

