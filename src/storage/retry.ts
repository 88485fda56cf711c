// Retries for backup repositories, like restic's RetryBackend: a primitive (`retry`) the drivers use
// around single requests, and a wrapper (`withRetries`) usable around any Backend for the idempotent
// operations (get, stat, list, delete). put is passed through: a stream cannot be replayed, so each
// driver retries the re-sendable pieces (segments, parts) itself.
// A get whose body breaks in the middle of the transfer is resumed with a ranged get from the first
// byte not yet delivered, so a long restore survives a dropped connection.
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, ObjectInfo, PutOptions, Range } from './backend.js';

export interface RetryPolicy {
  /** Total tries, the first included (default 5). */
  attempts?: number;
  /** Delay before the first retry in ms (default 250); doubles each time, with full jitter. */
  baseDelayMs?: number;
  /** Upper bound of one delay in ms (default 8000). */
  maxDelayMs?: number;
  /** Called before each retry: for logs. Must not print secrets (the error messages do not hold any). */
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown; what: string }) => void;
}

const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN',
  'EAI_AGAIN', 'ENOTFOUND', 'EADDRNOTAVAIL',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * True for failures worth another try: broken or refused connections, timeouts, and errors a driver marked
 * `transient` (HTTP 5xx, 408, 429). A driver's final error after its own retries is not transient, so
 * wrapping a retrying driver does not multiply the tries.
 */
export function isTransientError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    if (typeof e !== 'object') return false;
    const o = e as { code?: unknown; transient?: unknown; cause?: unknown; name?: unknown; message?: unknown };
    if (o.transient === true) return true;
    if (o.transient === false) return false;
    if (typeof o.code === 'string' && NETWORK_CODES.has(o.code)) return true;
    // undici's fetch: TypeError('fetch failed') or 'terminated' with the socket error as cause.
    if (o.name === 'TypeError' && (o.message === 'fetch failed' || o.message === 'terminated')) return true;
    if (o.name === 'TimeoutError') return true;
    e = o.cause;
  }
  return false;
}

/** Delay before retry number `attempt` (1 = first retry): exponential with full jitter. */
export function backoffDelay(attempt: number, policy: RetryPolicy = {}): number {
  const base = policy.baseDelayMs ?? 250;
  const max = policy.maxDelayMs ?? 8000;
  const ceiling = Math.min(max, base * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

/**
 * Runs op until it succeeds, fails with an error that is not transient, or the tries are used up
 * (then the last error is thrown). `op` receives the try number, starting at 1.
 */
export async function retry<T>(
  what: string,
  op: (attempt: number) => Promise<T>,
  policy: RetryPolicy = {},
  retryable: (err: unknown) => boolean = isTransientError,
): Promise<T> {
  const attempts = Math.max(1, policy.attempts ?? 5);
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (attempt >= attempts || !retryable(err)) throw err;
      const delayMs = backoffDelay(attempt, policy);
      policy.onRetry?.({ attempt, delayMs, error: err, what });
      await sleep(delayMs);
    }
  }
}

/** Wraps a backend so that get, stat, list and delete are retried on transient failures. */
export function withRetries(inner: Backend, policy: RetryPolicy = {}): Backend {
  return new RetryingBackend(inner, policy);
}

export class RetryingBackend implements Backend {
  constructor(readonly inner: Backend, private readonly policy: RetryPolicy = {}) {}

  get location(): string {
    return this.inner.location;
  }

  put(key: string, body: Readable, options?: PutOptions): Promise<ObjectInfo> {
    return this.inner.put(key, body, options);
  }

  async get(key: string, range?: Range): Promise<Readable> {
    const offset = range?.offset ?? 0;
    const first = await retry(`get ${key}`, () => this.inner.get(key, range), this.policy);
    return Readable.from(this.resumingBody(key, first, offset, range?.length), { objectMode: false });
  }

  private async *resumingBody(key: string, first: Readable, offset: number, length: number | undefined): AsyncGenerator<Buffer> {
    let body: Readable | undefined = first;
    let delivered = 0;
    let failures = 0;
    const attempts = Math.max(1, this.policy.attempts ?? 5);
    try {
      while (true) {
        try {
          for await (const chunk of body as AsyncIterable<Buffer | string>) {
            const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
            delivered += buf.length;
            failures = 0;
            yield buf;
          }
          return;
        } catch (err) {
          body.destroy();
          failures++;
          if (failures >= attempts || !isTransientError(err)) throw err;
          if (length !== undefined && delivered >= length) return;
          const delayMs = backoffDelay(failures, this.policy);
          this.policy.onRetry?.({ attempt: failures, delayMs, error: err, what: `get ${key} (resuming at byte ${offset + delivered})` });
          await sleep(delayMs);
          const rest: Range = { offset: offset + delivered, ...(length !== undefined ? { length: length - delivered } : {}) };
          body = await retry(`get ${key}`, () => this.inner.get(key, rest), this.policy);
        }
      }
    } finally {
      body?.destroy();
    }
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return retry(`stat ${key}`, () => this.inner.stat(key), this.policy);
  }

  /** A listing that breaks is started again and continues after the last key already given out. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let last: string | undefined;
    let failures = 0;
    const attempts = Math.max(1, this.policy.attempts ?? 5);
    while (true) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (last !== undefined && info.key <= last) continue;
          last = info.key;
          failures = 0;
          yield info;
        }
        return;
      } catch (err) {
        failures++;
        if (failures >= attempts || !isTransientError(err)) throw err;
        const delayMs = backoffDelay(failures, this.policy);
        this.policy.onRetry?.({ attempt: failures, delayMs, error: err, what: `list ${prefix}` });
        await sleep(delayMs);
      }
    }
  }

  delete(key: string): Promise<void> {
    return retry(`delete ${key}`, () => this.inner.delete(key), this.policy);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
