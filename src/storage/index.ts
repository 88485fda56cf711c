// Opens a backup repository from its URL: the scheme picks the driver.
// Object-store drivers (swift:, s3:) are loaded only when used, and wrapped in retry.ts's RetryingBackend:
// they retry each request themselves; the wrapper adds the resumption of a download that breaks midway.
import { StorageError, type Backend } from './backend.js';
import { openFileBackend } from './file/file.js';
import { withRetries } from './retry.js';

export type { Backend, ObjectInfo, PutOptions, Range } from './backend.js';
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

export async function openStorage(url: string, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
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
  return open(parsed, env);
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
