// Small helpers shared by the object-store drivers.
import { StorageError } from './backend.js';

/** A StorageError that says whether another try could help (read by retry.ts's isTransientError). */
export function storageError(message: string, options: { cause?: unknown; transient?: boolean } = {}): StorageError {
  const err = new StorageError(message, options.cause === undefined ? undefined : { cause: options.cause });
  Object.defineProperty(err, 'transient', { value: options.transient ?? false, enumerable: false, writable: true, configurable: true });
  return err;
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};

/** Parses "1073741824", "1GiB", "64M", "5 MiB" (K/M/G/T alone are binary). Throws StorageError naming `what`. */
export function parseSize(value: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new StorageError(`${what}: invalid size ${JSON.stringify(value)} (e.g. 1073741824, 64MiB, 1GiB)`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) throw new StorageError(`${what}: invalid size ${JSON.stringify(value)}`);
  return n;
}

/** Object metadata must survive HTTP headers on both Swift and S3: header-token names, printable ASCII values. */
export function checkMetadata(metadata: Record<string, string> | undefined, location: string): [string, string][] {
  if (!metadata) return [];
  const out: [string, string][] = [];
  for (const [name, value] of Object.entries(metadata)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(name)) {
      throw new StorageError(`metadata name ${JSON.stringify(name)} for ${location} must be letters, digits and '-'`);
    }
    // Non-ASCII or control characters are percent-encoded (headers carry bytes, not text).
    out.push([name, /^[\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value)]);
  }
  return out;
}

/** A URL for messages: no user info, no query (which could carry a token). */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** Splits "CONTAINER/PREFIX" of swift://CONTAINER/PREFIX or s3://BUCKET/PREFIX; the prefix ends with '/' or is ''. */
export function splitRepositoryUrl(url: URL, kind: string): { container: string; prefix: string } {
  if (url.username || url.password) {
    throw new StorageError(`${kind} storage URL must not hold credentials: use the environment variables (see docs/storage.md)`);
  }
  if (url.port) throw new StorageError(`${kind} storage URL takes no port: the endpoint comes from the environment`);
  if (url.search || url.hash) throw new StorageError(`${kind} storage URL takes no query or fragment`);
  const container = decodeURIComponent(url.hostname);
  if (!container) throw new StorageError(`${kind} storage URL needs a ${kind === 's3' ? 'bucket' : 'container'}: ${url.protocol}//NAME/PREFIX`);
  const parts = decodeURIComponent(url.pathname).split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw new StorageError(`${kind} storage URL prefix must not contain . or ..`);
  return { container, prefix: parts.length ? `${parts.join('/')}/` : '' };
}
