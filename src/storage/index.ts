// Opens a backup repository from its URL: the scheme picks the driver.
// Object-store drivers (swift:, s3:) are loaded only when used, and wrapped in retry.ts's RetryingBackend:
// they retry each request themselves; the wrapper adds the resumption of a download that breaks midway.
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { StorageError, type Backend, type ObjectWriter, type PutOptions } from './backend.js';
import { openFileBackend } from './file/file.js';
import { withRetries } from './retry.js';
import { storageEnv } from './credentials.js';

export type { Backend, ObjectHandle, ObjectInfo, ObjectWriter, PutOptions, Range } from './backend.js';
export { ObjectNotFoundError, StorageError } from './backend.js';

type Opener = (url: URL, env: NodeJS.ProcessEnv) => Promise<Backend>;

const drivers: Record<string, () => Promise<Opener>> = {
  'file:': async () => openFileBackend,
  'swift:': async () => {
    const { openSwiftBackend } = await import('./swift/swift.js');
    return async (url, env) => withRetries(await openSwiftBackend(url, env));
  },
  's3:': async () => {
    const { openS3Backend } = await import('./s3/s3.js');
    return async (url, env) => withRetries(await openS3Backend(url, env));
  },
};

/** env: the storage driver's variables; by default this process's, with an agent's credentials file over them (credentials.ts). */
export async function openStorage(url: string, env?: NodeJS.ProcessEnv): Promise<Backend> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new StorageError(`invalid storage URL ${JSON.stringify(url)}: expected file:///path, swift://container/prefix or s3://bucket/prefix`);
  }
  const load = drivers[parsed.protocol];
  if (!load) {
    throw new StorageError(`unsupported storage URL scheme ${JSON.stringify(parsed.protocol)}: expected file:, swift: or s3:`);
  }
  // WHATWG URLs read file:relative as file:///relative: insist on the absolute form users meant.
  if (parsed.protocol === 'file:' && !/^file:\/\/(localhost)?\//.test(url)) {
    throw new StorageError(`file storage URL must be file:///absolute/path, got ${JSON.stringify(url)}`);
  }
  const open = await load();
  return open(parsed, env ?? (await storageEnv(url)));
}

/**
 * Deletes many objects: one request per 1,000 keys where the driver can (S3 DeleteObjects), otherwise a few
 * deletes at a time. Missing objects are not an error.
 */
export async function deleteObjects(storage: Backend, keys: string[], concurrency = 8): Promise<void> {
  let target: Backend = storage;
  while ('inner' in target && (target as { inner?: Backend }).inner) target = (target as { inner: Backend }).inner;
  const bulk = (target as { deleteMany?: (keys: string[]) => Promise<void> }).deleteMany;
  if (typeof bulk === 'function') return bulk.call(target, keys);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length) await storage.delete(keys[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
}

/**
 * Writes an object by appends from the caller's buffers: through the driver's own writer where it has
 * one, otherwise through put, with a copy of each buffer for the stream to keep until it is sent.
 */
export async function createObject(storage: Backend, key: string, options?: PutOptions): Promise<ObjectWriter> {
  if (storage.create) return storage.create(key, options);
  const body = new PassThrough({ highWaterMark: 4 << 20 });
  // abort() destroys the body with an error, which the driver may not be listening for at that moment.
  body.on('error', () => undefined);
  let failure: Error | undefined;
  const put = storage.put(key, body, options);
  const failed = put.then(
    () => new Promise<never>(() => undefined),
    (err: Error) => {
      failure = err;
      throw err;
    },
  );
  failed.catch(() => undefined);
  return {
    write: async (buf) => {
      if (failure) throw failure;
      if (body.write(Buffer.from(buf))) return;
      try {
        await Promise.race([once(body, 'drain'), failed]);
      } catch (err) {
        // A driver that gives up destroys the body first (an AbortError here): report why it gave up.
        await put.catch(() => undefined);
        throw failure ?? err;
      }
    },
    commit: () => {
      body.end();
      return put;
    },
    abort: async () => {
      body.destroy(new StorageError(`writing ${key} to ${storage.location} was abandoned`));
      await put.catch(() => undefined);
    },
  };
}
