// OpenStack Swift repository: swift://CONTAINER/PREFIX.
//
// - Authentication from the environment (auth.ts); a 401 renews the token once and the request goes on
//   (restarting memcached behind tempauth forgets every token).
// - Every request is retried with backoff on broken connections, 5xx, 408 and 429. All requests the driver
//   makes are idempotent (PUT of the same bytes, DELETE, GET, HEAD), and request bodies come from
//   re-readable segments, so a retry sends the same bytes again.
// - put: the stream is cut into segments of segmentSize. Segments larger than 8 MiB are sent while they are
//   read (overlapping the engine's compression with the upload) and spooled to a temporary file at the same
//   time, so a failed segment is sent again from the file; smaller segments are kept in memory, `concurrency`
//   of them in flight. An object of at most 8 MiB (or one in-memory segment) is one PUT; a larger one becomes
//   a Static Large Object: segments under KEY.segments/UPLOAD/NNNNNNNN, each checked against the MD5 Swift
//   returns, then the manifest (nested manifests past max_manifest_segments). Until the manifest is stored
//   nothing is visible under KEY. On failure the segments are deleted; segments that could not be deleted
//   stay listed under KEY.segments/ (list shows segments only when their manifest is missing), so the engine
//   sees and reports them, and delete removes them.
// - HTTP through node:http (http.ts), not fetch: constant memory for streamed bodies.
// - delete removes an SLO's segments with it (?multipart-manifest=delete).
// - list pages with marker (Swift returns at most 10,000 names a request).
import { randomBytes, createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { checkKey, ObjectNotFoundError, StorageError, type Backend, type ObjectInfo, type PutOptions, type Range } from '../backend.js';
import { retry, type RetryPolicy } from '../retry.js';
import { memorySegment, SegmentReader, type Segment } from '../spool.js';
import { checkMetadata, parseSize, splitRepositoryUrl, storageError } from '../util.js';
import { networkReason, swiftAuthFromEnv, type SwiftAuth, type SwiftSession } from './auth.js';
import { newAgents, request, type Answer } from './http.js';

export const SEGMENTS_MARK = '.segments/';
const DEFAULT_MEMORY_SEGMENT = 8 * 1024 * 1024;

/** Resolves on 'drain', or when `other` settles first (then nothing will drain). */
function drainOr(stream: PassThrough, other: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const finish = (): void => {
      stream.off('drain', finish);
      stream.off('close', finish);
      resolve();
    };
    stream.on('drain', finish);
    stream.on('close', finish);
    void other.then(finish, finish);
  });
}
const GiB = 1024 ** 3;

export interface SwiftOptions {
  /** Bytes per segment (default COUCHTROVE_SWIFT_SEGMENT_SIZE, else 1 GiB); capped at the cluster's max_file_size. */
  segmentSize?: number;
  /** Segments uploaded at the same time (default COUCHTROVE_SWIFT_CONCURRENCY, else 2). */
  concurrency?: number;
  /** Segments per manifest before manifests nest (default: the cluster's slo max_manifest_segments, else 1000). */
  maxManifestSegments?: number;
  /** Names asked for per listing request (default 10,000, Swift's usual maximum). */
  listPageSize?: number;
  /** Segments up to this size are spooled in memory rather than in a temporary file (default 8 MiB). */
  memorySpoolLimit?: number;
  /** Directory for segment spool files (default COUCHTROVE_SPOOL_DIR, else the system temporary directory). */
  spoolDir?: string;
  retry?: RetryPolicy;
}

interface ClusterLimits {
  maxFileSize: number;
  maxManifestSegments: number;
}

interface ListingItem {
  name?: string;
  subdir?: string;
  bytes?: number;
  hash?: string;
  last_modified?: string;
  slo_etag?: string;
}

interface ManifestEntry {
  path: string;
  etag: string;
  size_bytes: number;
}

type Query = Record<string, string>;

interface CallOptions {
  query?: Query;
  headers?: Record<string, string>;
  body?: () => Buffer | Readable | string;
  /** Statuses returned to the caller; anything else is an error. */
  ok: number[];
  /** Statuses that are worth another try besides 5xx/408/429 (e.g. 422 for an ETag mismatch in transit). */
  retryOn?: number[];
}

export async function openSwiftBackend(url: URL, env: NodeJS.ProcessEnv = process.env, options: SwiftOptions = {}): Promise<SwiftBackend> {
  const { container, prefix } = splitRepositoryUrl(url, 'swift');
  if (container.includes('/')) throw new StorageError('Swift container names cannot contain /');
  const policy = options.retry ?? {};
  const auth = swiftAuthFromEnv(env, policy);
  const segmentSize = options.segmentSize ?? (env.COUCHTROVE_SWIFT_SEGMENT_SIZE ? parseSize(env.COUCHTROVE_SWIFT_SEGMENT_SIZE, 'COUCHTROVE_SWIFT_SEGMENT_SIZE') : GiB);
  const concurrency = options.concurrency ?? (env.COUCHTROVE_SWIFT_CONCURRENCY ? Number(env.COUCHTROVE_SWIFT_CONCURRENCY) : 2);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new StorageError('COUCHTROVE_SWIFT_CONCURRENCY must be an integer from 1 to 64');
  const backend = new SwiftBackend(container, prefix, auth, { ...options, segmentSize, concurrency, spoolDir: options.spoolDir ?? env.COUCHTROVE_SPOOL_DIR });
  // Authenticate now, so that a configuration mistake shows at once with a clear message.
  await backend.session();
  return backend;
}

export class SwiftBackend implements Backend {
  readonly location: string;
  private readonly agents = newAgents();
  private current: Promise<SwiftSession> | undefined;
  private containerReady: Promise<void> | undefined;
  private limitsPromise: Promise<ClusterLimits> | undefined;
  private readonly policy: RetryPolicy;
  private readonly segmentSize: number;
  private readonly concurrency: number;
  private readonly listPageSize: number;

  constructor(
    readonly container: string,
    /** '' or ends with '/'. */
    readonly prefix: string,
    private readonly auth: SwiftAuth,
    private readonly options: SwiftOptions & { segmentSize: number; concurrency: number },
  ) {
    this.location = `swift://${container}/${prefix}`;
    this.policy = options.retry ?? {};
    this.segmentSize = options.segmentSize;
    this.concurrency = options.concurrency;
    this.listPageSize = Math.min(Math.max(1, options.listPageSize ?? 10000), 10000);
    if (!Number.isSafeInteger(this.segmentSize) || this.segmentSize < 1) throw new StorageError('Swift segment size must be a positive number of bytes');
  }

  // ---- sessions and requests -------------------------------------------------------------------------

  /** The current token, authenticating (once for all concurrent callers) when there is none or it expires soon. */
  async session(): Promise<SwiftSession> {
    if (this.current) {
      const s = await this.current.catch(() => undefined);
      if (s && (s.expiresAt === undefined || s.expiresAt - Date.now() > 60_000)) return s;
      if (s) this.current = undefined;
    }
    if (!this.current) {
      const p = this.auth.authenticate();
      this.current = p;
      p.catch(() => {
        if (this.current === p) this.current = undefined;
      });
    }
    return this.current;
  }

  private renew(stale: SwiftSession): void {
    void this.current?.then((s) => {
      if (s === stale) this.current = undefined;
    }, () => undefined);
  }

  private urlFor(storageUrl: string, object: string | null, query?: Query): string {
    let u = `${storageUrl.replace(/\/+$/, '')}/${encodeURIComponent(this.container)}`;
    if (object !== null) u += `/${object.split('/').map(encodeURIComponent).join('/')}`;
    if (query && Object.keys(query).length) u += `?${new URLSearchParams(query).toString()}`;
    return u;
  }

  /**
   * One Swift request on the container (object null) or an object (full name in the container), retried on
   * transient failures, re-authenticated on 401. Returns the response for a status in `ok` (its body is
   * the caller's to read or cancel).
   */
  private call(what: string, method: string, object: string | null, opts: CallOptions): Promise<Answer> {
    let tries = 0;
    return retry(what, async () => {
      tries++;
      let renewed = 0;
      while (true) {
        const session = await this.session();
        const headers: Record<string, string> = { ...opts.headers, 'X-Auth-Token': session.token };
        const body = opts.body?.();
        let res: Answer;
        try {
          const url = this.urlFor(session.storageUrl, object, opts.query);
          res = await request(this.agents, url, method, headers, body);
        } catch (err) {
          if (body instanceof Readable) body.destroy();
          throw storageError(`${what} in ${this.location} failed: ${networkReason(err)}`, { cause: err, transient: true });
        }
        if (res.status === 401 && this.auth.renewable && renewed < 2) {
          await res.cancel();
          renewed++;
          this.renew(session);
          continue;
        }
        if (opts.ok.includes(res.status)) return res;
        const text = await res.text().catch(() => '');
        const transient = res.status >= 500 || res.status === 408 || res.status === 429 || (opts.retryOn ?? []).includes(res.status);
        const detail = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
        const hint = res.status === 401 ? ` (${this.auth.description} gave a token that Swift does not accept)` : res.status === 403 ? ' (the user has no access to this container)' : '';
        const err = storageError(`${what} in ${this.location} failed: HTTP ${res.status}${detail ? ` ${detail}` : ''}${hint}`, { transient });
        (err as StorageError & { status?: number }).status = res.status;
        throw err;
      }
    }, this.policy).catch((err: unknown) => {
      // The last try's error, now final: a wrapper must not retry it again.
      if (err instanceof StorageError) {
        if ((err as StorageError & { transient?: boolean }).transient && tries > 1) err.message += ` (gave up after ${tries} tries)`;
        Object.defineProperty(err, 'transient', { value: false });
        throw err;
      }
      throw storageError(`${what} in ${this.location} failed: ${(err as Error).message}`, { cause: err });
    });
  }

  private name(key: string): string {
    return this.prefix + checkKey(key);
  }

  private ensureContainer(): Promise<void> {
    if (!this.containerReady) {
      const p = this.call(`creating container ${this.container}`, 'PUT', null, { ok: [201, 202, 204] }).then(async (res) => {
        await res.cancel();
      });
      this.containerReady = p;
      p.catch(() => {
        if (this.containerReady === p) this.containerReady = undefined;
      });
    }
    return this.containerReady;
  }

  /** max_file_size and max_manifest_segments from the cluster's /info (defaults when it is not published). */
  private limits(): Promise<ClusterLimits> {
    this.limitsPromise ??= (async () => {
      const defaults: ClusterLimits = { maxFileSize: 5 * GiB + 2, maxManifestSegments: 1000 };
      try {
        const { storageUrl } = await this.session();
        const u = new URL(storageUrl);
        const at = u.pathname.indexOf('/v1/');
        u.pathname = `${at >= 0 ? u.pathname.slice(0, at) : ''}/info`;
        u.search = '';
        const res = await fetch(u, { signal: AbortSignal.timeout(10_000) });
        if (!res.ok) {
          await res.body?.cancel();
          return defaults;
        }
        const info = (await res.json()) as { swift?: { max_file_size?: number }; slo?: { max_manifest_segments?: number } };
        return {
          maxFileSize: info.swift?.max_file_size ?? defaults.maxFileSize,
          maxManifestSegments: info.slo?.max_manifest_segments ?? defaults.maxManifestSegments,
        };
      } catch {
        return defaults;
      }
    })();
    return this.limitsPromise;
  }

  // ---- put ------------------------------------------------------------------------------------------------

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<ObjectInfo> {
    const name = this.name(key);
    const meta = checkMetadata(options.metadata, this.location);
    const metaHeaders: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    for (const [k, v] of meta) metaHeaders[`X-Object-Meta-${k}`] = v;

    let reader: SegmentReader | undefined;
    try {
      await this.ensureContainer();
      const cluster = await this.limits();
      const limits = { ...cluster, maxManifestSegments: this.options.maxManifestSegments ?? cluster.maxManifestSegments };
      const segmentSize = Math.min(this.segmentSize, limits.maxFileSize);
      const uploadId = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
      const segPrefix = `${name}${SEGMENTS_MARK}${uploadId}/`;
      reader = new SegmentReader(body, segmentSize, {
        ...(this.options.memorySpoolLimit !== undefined ? { memoryLimit: this.options.memorySpoolLimit } : {}),
        ...(this.options.spoolDir ? { dir: this.options.spoolDir } : {}),
      });
      const memoryLimit = this.options.memorySpoolLimit ?? DEFAULT_MEMORY_SEGMENT;
      let size: number;
      if (segmentSize <= memoryLimit) {
        // Small segments: kept in memory, `concurrency` of them uploading while the next is read.
        const first = await reader.next();
        if (first.last) {
          await this.putWhole(key, name, first, metaHeaders);
          return { key, size: first.size, modified: new Date() };
        }
        size = await this.putLarge(key, name, segPrefix, reader, first, metaHeaders, limits);
      } else {
        // Large segments: an object that fits in memory is one PUT; anything larger is streamed to Swift
        // segment by segment as it is read (each segment also spooled to a file, for retries).
        const head = await reader.peek(memoryLimit);
        if (head.ended) {
          await this.putWhole(key, name, memorySegment(head.data), metaHeaders);
          return { key, size: head.data.length, modified: new Date() };
        }
        size = await this.putStreamed(key, name, segPrefix, reader, metaHeaders, limits);
      }
      await this.removeStaleSegments(name, uploadId);
      return { key, size, modified: new Date() };
    } catch (err) {
      await reader?.abort();
      if (err instanceof StorageError) throw err; // already says what failed, and where
      const msg = err instanceof Error ? err.message : String(err);
      throw storageError(`writing ${key} to ${this.location} failed: ${msg}`, { cause: err });
    }
  }

  private async putWhole(key: string, name: string, seg: Segment, metaHeaders: Record<string, string>): Promise<void> {
    try {
      await this.putSegment(`writing ${key}`, name, seg, metaHeaders);
    } finally {
      await seg.dispose();
    }
    await this.removeStaleSegments(name, null);
  }

  /** PUT one segment (or a whole small object) with its MD5 as ETag, and check the ETag Swift returns. */
  private async putSegment(what: string, name: string, seg: Segment, extraHeaders: Record<string, string> = {}): Promise<void> {
    const res = await this.call(what, 'PUT', name, {
      headers: { ...extraHeaders, ETag: seg.md5, 'Content-Length': String(seg.size) },
      body: () => seg.body(),
      ok: [201],
      retryOn: [422],
    });
    await res.cancel();
    const etag = (res.headers.get('etag') ?? '').replace(/"/g, '');
    if (etag !== seg.md5) {
      throw storageError(`${what}: Swift stored MD5 ${etag || '(none)'} but ${seg.size} bytes with MD5 ${seg.md5} were sent`);
    }
  }

  private async putLarge(
    key: string,
    name: string,
    segPrefix: string,
    reader: SegmentReader,
    first: Segment,
    metaHeaders: Record<string, string>,
    limits: ClusterLimits,
  ): Promise<number> {
    const entries: ManifestEntry[] = [];
    const inflight = new Map<number, Promise<void>>();
    let failure: { err: unknown } | undefined;
    let total = 0;
    const start = (seg: Segment): void => {
      const segName = `${segPrefix}${String(seg.index).padStart(8, '0')}`;
      entries[seg.index] = { path: `/${this.container}/${segName}`, etag: seg.md5, size_bytes: seg.size };
      total += seg.size;
      const p = this.putSegment(`writing segment ${seg.index} of ${key}`, segName, seg)
        .catch((err: unknown) => {
          failure ??= { err };
        })
        .finally(async () => {
          inflight.delete(seg.index);
          await seg.dispose();
        });
      inflight.set(seg.index, p);
    };
    try {
      let seg = first;
      while (true) {
        start(seg);
        while (inflight.size >= this.concurrency && !failure) await Promise.race(inflight.values());
        if (failure || seg.last) break;
        seg = await reader.next();
        if (failure) {
          await seg.dispose();
          break;
        }
      }
      await Promise.all(inflight.values());
      if (failure) throw failure.err;
      const manifest = await this.nestManifest(key, segPrefix, entries, limits.maxManifestSegments);
      await this.putManifest(`writing the manifest of ${key}`, name, manifest, metaHeaders);
      return total;
    } catch (err) {
      await Promise.allSettled(inflight.values());
      throw await this.abandon(key, segPrefix, err);
    }
  }

  /** After a failed upload: removes its segments; the error to throw says what could not be removed. */
  private async abandon(key: string, segPrefix: string, err: unknown): Promise<unknown> {
    const left = await this.deleteSegments(segPrefix);
    if (left === 0) return err;
    const reason = err instanceof Error ? err.message : String(err);
    const what = left > 0 ? `${left} of its segments` : 'its segments';
    return storageError(`${reason}; ${what} could not be removed and remain under ${key}${SEGMENTS_MARK} (listed, and removed by delete)`, { cause: err });
  }

  /** Segments streamed one after the other as the source is read (see streamSegment), then the manifest. */
  private async putStreamed(
    key: string,
    name: string,
    segPrefix: string,
    reader: SegmentReader,
    metaHeaders: Record<string, string>,
    limits: ClusterLimits,
  ): Promise<number> {
    const entries: ManifestEntry[] = [];
    let total = 0;
    // Swift stores a segment (fsync, container update) after its last byte: meanwhile the next segment is
    // already being read and sent. At most `concurrency` segments wait for Swift's answer.
    const finishing: Promise<void>[] = [];
    let failure: { err: unknown } | undefined;
    try {
      while (true) {
        const index = entries.length;
        const segName = `${segPrefix}${String(index).padStart(8, '0')}`;
        const { seg, finish } = await this.streamSegment(`writing segment ${index} of ${key}`, segName, reader);
        entries.push({ path: `/${this.container}/${segName}`, etag: seg.md5, size_bytes: seg.size });
        total += seg.size;
        finishing.push(finish.then(() => undefined, (err: unknown) => {
          failure ??= { err };
        }));
        while (finishing.length >= this.concurrency) await finishing.shift();
        if (failure) throw failure.err;
        if (seg.last) break;
      }
      await Promise.all(finishing);
      if (failure) throw (failure as { err: unknown }).err;
      const manifest = await this.nestManifest(key, segPrefix, entries, limits.maxManifestSegments);
      await this.putManifest(`writing the manifest of ${key}`, name, manifest, metaHeaders);
      return total;
    } catch (err) {
      await Promise.all(finishing);
      throw await this.abandon(key, segPrefix, err);
    }
  }

  /**
   * Sends the next segment while it is read from the source (chunked, no retry) and spools it at the same
   * time; if that attempt fails or Swift's ETag is not the MD5 of what was read, the segment is sent again
   * from the spool with the usual retries and re-authentication. Returns once the segment has been read;
   * `finish` settles when Swift has it (and the spool file is gone).
   */
  private async streamSegment(what: string, segName: string, reader: SegmentReader): Promise<{ seg: Segment; finish: Promise<void> }> {
    const session = await this.session();
    const wire = new PassThrough({ highWaterMark: 1024 * 1024 });
    let outcome: { res?: Answer; err?: unknown } | undefined;
    const done = request(this.agents, this.urlFor(session.storageUrl, segName), 'PUT', { 'X-Auth-Token': session.token, 'Content-Type': 'application/octet-stream' }, wire).then(
      (res) => {
        outcome = { res };
      },
      (err: unknown) => {
        outcome = { err };
      },
    );
    let seg: Segment;
    try {
      seg = await reader.nextStreamed(async (chunk) => {
        if (outcome || wire.destroyed) return; // the first attempt is over: just spool
        if (!wire.write(chunk)) await drainOr(wire, done);
      });
    } catch (err) {
      wire.destroy();
      await done;
      throw err;
    }
    if (!outcome) wire.end();
    else wire.destroy();
    // The answer (and, if needed, sending the segment again from its spool file) is awaited by the caller.
    const finish = (async (): Promise<void> => {
      try {
        await done;
        const res = outcome!.res;
        if (res?.status === 201) {
          await res.cancel();
          if ((res.headers.get('etag') ?? '').replace(/"/g, '') === seg.md5) return;
        } else {
          await res?.cancel();
          if (res?.status === 401) this.renew(session);
        }
        await this.putSegment(what, segName, seg);
      } finally {
        await seg.dispose();
      }
    })();
    return { seg, finish };
  }

  /** Groups entries into sub-manifests until the top manifest is within the cluster's segment limit. */
  private async nestManifest(key: string, segPrefix: string, entries: ManifestEntry[], max: number): Promise<ManifestEntry[]> {
    let level = entries;
    let depth = 0;
    while (level.length > max) {
      const next: ManifestEntry[] = [];
      for (let i = 0; i < level.length; i += max) {
        const group = level.slice(i, i + max);
        const subName = `${segPrefix}m${depth}-${String(i / max).padStart(8, '0')}`;
        const etag = await this.putManifest(`writing sub-manifest ${i / max} of ${key}`, subName, group, {});
        next.push({ path: `/${this.container}/${subName}`, etag, size_bytes: group.reduce((s, e) => s + e.size_bytes, 0) });
      }
      level = next;
      depth++;
    }
    return level;
  }

  /** PUT an SLO manifest; checks Swift's ETag (MD5 of the segment MD5s) and returns it. */
  private async putManifest(what: string, name: string, entries: ManifestEntry[], headers: Record<string, string>): Promise<string> {
    const expected = createHash('md5').update(entries.map((e) => e.etag).join('')).digest('hex');
    const json = JSON.stringify(entries);
    const res = await this.call(what, 'PUT', name, {
      query: { 'multipart-manifest': 'put' },
      headers: { ...headers, 'Content-Type': headers['Content-Type'] ?? 'application/octet-stream', Accept: 'application/json' },
      body: () => json,
      ok: [201, 202],
    });
    const text = await res.text();
    if (res.status !== 201) {
      // Should not happen without heartbeat=on, but tolerate the JSON form.
      throw storageError(`${what}: unexpected HTTP ${res.status} ${text.slice(0, 200)}`);
    }
    const etag = (res.headers.get('etag') ?? '').replace(/"/g, '');
    if (etag !== expected) throw storageError(`${what}: Swift answered ETag ${etag || '(none)'} instead of ${expected}`);
    return etag;
  }

  /** Deletes every object under a name prefix; returns how many could not be deleted (-1: could not list them). */
  private async deleteSegments(segPrefix: string): Promise<number> {
    let left = 0;
    try {
      // Sub-manifests first would delete their segments too; plain deletes of each name are enough.
      for await (const item of this.listNames(segPrefix)) {
        try {
          const res = await this.call(`removing segment ${item.name}`, 'DELETE', item.name!, { ok: [204, 404] });
          await res.cancel();
        } catch {
          left++;
        }
      }
    } catch {
      return -1;
    }
    return left;
  }

  /** After an overwrite: segments of earlier uploads of the same name (other than keep) are garbage. */
  private async removeStaleSegments(name: string, keep: string | null): Promise<void> {
    const base = `${name}${SEGMENTS_MARK}`;
    const stale = new Set<string>();
    try {
      for await (const item of this.listNames(base)) {
        const upload = item.name!.slice(base.length).split('/')[0]!;
        if (upload !== keep) stale.add(upload);
      }
      for (const upload of stale) await this.deleteSegments(`${base}${upload}/`);
    } catch {
      // Best effort: leftovers are listed and removed by delete.
    }
  }

  // ---- get / stat ---------------------------------------------------------------------------------------

  async get(key: string, range?: Range): Promise<Readable> {
    const name = this.name(key);
    const offset = range?.offset ?? 0;
    if (range?.length === 0 || offset < 0) {
      if (!(await this.stat(key))) throw new ObjectNotFoundError(this.location, key);
      return Readable.from([]);
    }
    const headers: Record<string, string> = {};
    if (offset > 0 || range?.length !== undefined) {
      headers.Range = `bytes=${offset}-${range?.length !== undefined ? offset + range.length - 1 : ''}`;
    }
    const res = await this.call(`reading ${key}`, 'GET', name, { headers, ok: [200, 206, 404, 416] });
    if (res.status === 404) {
      await res.cancel();
      throw new ObjectNotFoundError(this.location, key);
    }
    if (res.status === 416 || !res.body) {
      await res.cancel();
      return Readable.from([]);
    }
    if (res.status === 200 && headers.Range) {
      // A server that ignored the range: a retry wrapper must not get the wrong bytes.
      res.destroy();
      throw storageError(`reading ${key} from ${this.location}: the server ignored the byte range`);
    }
    return res.body;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const res = await this.call(`stat ${key}`, 'HEAD', this.name(key), { ok: [200, 204, 404] });
    await res.cancel();
    if (res.status === 404) return undefined;
    const modified = res.headers.get('last-modified');
    return { key, size: Number(res.headers.get('content-length') ?? 0), ...(modified ? { modified: new Date(modified) } : {}) };
  }

  /** Raw response headers of an object (X-Object-Meta-*, X-Static-Large-Object): for tests and tools. */
  async head(key: string): Promise<Headers | undefined> {
    const res = await this.call(`stat ${key}`, 'HEAD', this.name(key), { ok: [200, 204, 404] });
    await res.cancel();
    return res.status === 404 ? undefined : res.headers;
  }

  // ---- list ---------------------------------------------------------------------------------------------

  /** Raw container listing of names starting with namePrefix, page by page. */
  private async *listNames(namePrefix: string): AsyncGenerator<ListingItem> {
    let marker = '';
    while (true) {
      const query: Query = { format: 'json', prefix: namePrefix, limit: String(this.listPageSize) };
      if (marker) query.marker = marker;
      const res = await this.call(`listing ${namePrefix || '(all)'}`, 'GET', null, { query, ok: [200, 204, 404] });
      if (res.status !== 200) {
        await res.cancel();
        return;
      }
      const page = await res.json<ListingItem[]>();
      for (const item of page) if (item.name !== undefined) yield item;
      if (page.length < this.listPageSize) return;
      const lastName = page[page.length - 1]?.name ?? page[page.length - 1]?.subdir;
      if (!lastName) return;
      marker = lastName;
    }
  }

  /**
   * Objects under prefix in name order. Segments (KEY.segments/...) are left out while their manifest KEY
   * exists; orphaned segments (an upload that failed and could not clean up) are listed, so they are seen.
   */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const namePrefix = this.prefix + prefix;
    // Manifests that are a prefix of the current name (names are sorted, so a manifest's segments follow it
    // before any name that does not start with it).
    const open: string[] = [];
    const outside = new Map<string, boolean>();
    for await (const item of this.listNames(namePrefix)) {
      const name = item.name!;
      while (open.length && !name.startsWith(open[open.length - 1]!)) open.pop();
      const at = name.lastIndexOf(SEGMENTS_MARK);
      if (at > 0) {
        const parent = name.slice(0, at);
        if (open.includes(parent)) continue;
        if (!parent.startsWith(namePrefix)) {
          // The manifest sorts before the listing's prefix: ask once.
          let exists = outside.get(parent);
          if (exists === undefined) {
            const res = await this.call(`stat ${parent}`, 'HEAD', parent, { ok: [200, 204, 404] });
            await res.cancel();
            exists = res.status !== 404 && res.headers.get('x-static-large-object') === 'True';
            outside.set(parent, exists);
          }
          if (exists) continue;
        }
      }
      if (item.slo_etag !== undefined) open.push(name);
      const modified = item.last_modified ? new Date(`${item.last_modified}Z`) : undefined;
      yield { key: name.slice(this.prefix.length), size: item.bytes ?? 0, ...(modified && !Number.isNaN(modified.getTime()) ? { modified } : {}) };
    }
  }

  // ---- delete -------------------------------------------------------------------------------------------

  async delete(key: string): Promise<void> {
    const name = this.name(key);
    const head = await this.call(`stat ${key}`, 'HEAD', name, { ok: [200, 204, 404] });
    await head.cancel();
    if (head.status === 404) return;
    if (head.headers.get('x-static-large-object') !== 'True') {
      const res = await this.call(`deleting ${key}`, 'DELETE', name, { ok: [204, 404] });
      await res.cancel();
      return;
    }
    const res = await this.call(`deleting ${key} and its segments`, 'DELETE', name, {
      query: { 'multipart-manifest': 'delete' },
      headers: { Accept: 'application/json' },
      ok: [200],
    });
    const text = await res.text();
    let doc: { 'Response Status'?: string; Errors?: [string, string][]; 'Number Not Found'?: number };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch {
      throw storageError(`deleting ${key} from ${this.location}: unexpected answer ${text.slice(0, 200)}`);
    }
    const status = doc['Response Status'] ?? '';
    if (!status.startsWith('200') && !status.startsWith('404')) {
      const errors = (doc.Errors ?? []).slice(0, 3).map(([n, s]) => `${n}: ${s}`).join('; ');
      throw storageError(`deleting ${key} from ${this.location} failed: ${status}${errors ? ` (${errors})` : ''}`, {
        transient: status.startsWith('5'),
      });
    }
  }

  async close(): Promise<void> {
    this.current = undefined;
    this.agents.http.destroy();
    this.agents.https.destroy();
  }
}

