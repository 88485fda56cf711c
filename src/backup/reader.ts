// Decoding the data stream. Files up to one lane's share are shared out among lanes, one per worker
// thread, balanced by size; each lane's worker decodes, hashes and writes its files' records, so the
// files hash in parallel. A file bigger than that is spread over every worker at once: each record is
// decrypted, decompressed and written at its position by any free worker, and the caller's thread
// hashes the plain text in order as the workers hand it back. Records are read from storage with one
// ranged read per contiguous run. Every file's size and SHA-256 are checked before it is done.
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ObjectNotFoundError, type Backend, type ObjectHandle } from '../storage/backend.js';
import type { BackupKeys } from '../crypto/keys.js';
import type { Codec } from '../config/catalogue.js';
import { CouchtroveError } from '../util/errors.js';
import { sha256Hex, type Extent, type FileEntry, type StoredObject } from './format.js';
import { HEADER_BYTES, maxRecordBytes, parseHeader } from './records.js';
import { RecordPool, RecordTaskError } from './pool.js';
import { WRONG_KEY } from './repository.js';
import { mapLimit } from '../util/concurrency.js';
import type { Progress } from './types.js';
import { recordDone } from '../util/gc.js';

/** Where a lane reads its records from: an object from some position on. */
interface RecordSource {
  /** Reads n bytes into target (from its start), fewer only where the object ends; returns the count. */
  readInto(target: Buffer, n: number): Promise<number>;
  /** Continues from another position of the same object, where the source can (a stream cannot). */
  moveTo?(pos: number): void;
  close(): Promise<void>;
}

/** Reads at positions through the driver's handle: nothing allocated or copied on the way. */
class HandleReader implements RecordSource {
  constructor(private readonly handle: ObjectHandle, private pos: number) {}
  async readInto(target: Buffer, n: number): Promise<number> {
    const got = await this.handle.readInto(target.subarray(0, n), this.pos);
    this.pos += got;
    return got;
  }
  moveTo(pos: number): void {
    this.pos = pos;
  }
  close(): Promise<void> {
    return this.handle.close();
  }
}

/** Reads from an object read whole beforehand. */
class MemoryReader implements RecordSource {
  constructor(private readonly bytes: Buffer, private pos: number) {}
  async readInto(target: Buffer, n: number): Promise<number> {
    const got = this.bytes.copy(target, 0, this.pos, Math.min(this.pos + n, this.bytes.length));
    this.pos += got;
    return got;
  }
  moveTo(pos: number): void {
    this.pos = pos;
  }
  async close(): Promise<void> {}
}

/** The first n bytes of an object (fewer when it is shorter), in one read. */
async function readPrefix(storage: Backend, key: string, n: number): Promise<Buffer> {
  const target = Buffer.allocUnsafe(n);
  let got = 0;
  if (storage.open) {
    const h = await storage.open(key);
    try {
      for (let k = -1; got < n && k !== 0; got += k) k = await h.readInto(target.subarray(got), got);
    } finally {
      await h.close();
    }
  } else {
    for await (const c of await storage.get(key, { offset: 0, length: n })) got += (c as Buffer).copy(target, got);
  }
  return target.subarray(0, got);
}

/** Objects up to this size are read whole before a restore, up to SMALL_BUDGET bytes in all. */
const SMALL_OBJECT = 1 << 20;
const SMALL_BUDGET = 32 << 20;

/** Exact-length reads from a stream. */
class StreamReader implements RecordSource {
  private readonly it: AsyncIterator<Buffer>;
  private chunks: Buffer[] = [];
  private buffered = 0;
  constructor(stream: Readable) {
    this.it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }
  /** Reads exactly n bytes into target (from its start), or fewer at the end of the stream; returns the count. */
  async readInto(target: Buffer, n: number): Promise<number> {
    while (this.buffered < n) {
      const r = await this.it.next();
      if (r.done) break;
      this.chunks.push(r.value);
      this.buffered += r.value.length;
    }
    const take = Math.min(n, this.buffered);
    let filled = 0;
    while (filled < take) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, take - filled);
      c.copy(target, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= take;
    return take;
  }
  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** A backup's data object as the reader needs it: where it is, how big, and the key for its records. */
export interface DataObject {
  backup: string;
  object: StoredObject;
  codec: Codec;
  recordSize: number;
  keys: BackupKeys | null;
}

interface Cursor {
  backup: string;
  reader: RecordSource;
  pos: number;
}

export interface FileSink {
  /** Where the file's bytes go: a descriptor the pool's threads write to at positions, or null to only check them. */
  begin(file: FileEntry): Promise<number | null>;
  /** The file's first `bytes` bytes are written (not yet checked). */
  written?(file: FileEntry, bytes: number): void;
  /** Called once every byte is written and the file's size and SHA-256 have been checked. */
  end(file: FileEntry): Promise<void>;
}

interface LaneState {
  failure: { error: unknown } | null;
  done: { bytes: number; files: number };
  report: () => void;
}

/** Stored-record buffers per lane: one at its worker while the next is read (a third measured no faster). */
const PAYLOADS_PER_LANE = 2;
let nextStream = 0;

/** Largest first, each to the least loaded lane; each lane then keeps the catalog's (the data object's) order. */
function shareOut(files: FileEntry[], lanes: number): FileEntry[][] {
  const load = Array.from({ length: lanes }, () => 0);
  const laneOf = new Map<FileEntry, number>();
  for (const f of [...files].sort((a, b) => b.size - a.size)) {
    const lane = load.indexOf(Math.min(...load));
    laneOf.set(f, lane);
    load[lane]! += f.size;
  }
  return load.map((_, lane) => files.filter((f) => laneOf.get(f) === lane));
}

/** For the first extent of every contiguous run (same object, adjacent bytes) in reading order: the run's length. */
function runLengths(files: FileEntry[]): Map<Extent, number> {
  const runs = new Map<Extent, number>();
  let first: Extent | undefined;
  let end = -1;
  for (const e of files.flatMap((f) => f.extents)) {
    if (first && e.backup === first.backup && e.offset === end) runs.set(first, runs.get(first)! + e.length);
    else runs.set((first = e), e.length);
    end = e.offset + e.length;
  }
  return runs;
}

export class DataDecoder {
  private readonly pool: RecordPool;
  private objects = new Map<string, DataObject>();
  /** The small objects read whole by open(), by backup id. */
  private readonly inMemory = new Map<string, Buffer>();

  /** `workers`: decoding threads, by default one per core (RecordPool). */
  constructor(
    private readonly storage: Backend,
    workers?: number,
  ) {
    // Created first: its worker threads take ~75 ms to start, about what reading the catalog takes.
    this.pool = new RecordPool(workers);
  }

  /**
   * The data objects of the backup's chain, by backup id. Missing or short ones fail here, before anything
   * is written; with `exact` (verify), so do longer ones: bytes appended to an object are no part of any backup.
   */
  async open(objects: Map<string, DataObject>, exact = false): Promise<void> {
    this.objects = objects;
    this.inMemory.clear();
    // Small objects (an archive's cuts: a few KiB each) are read whole now, 16 at a time, up to a budget:
    // one request each instead of an open, a read and a close per extent while restoring. The rest are
    // only checked to be there, also 16 at a time.
    let budget = SMALL_BUDGET;
    const small = new Set<DataObject>();
    for (const o of objects.values()) {
      if (o.object.size > SMALL_OBJECT || o.object.size > budget) continue;
      small.add(o);
      budget -= o.object.size;
    }
    if (small.size < 2) small.clear();
    await mapLimit([...objects.values()], 16, async (o) => {
      let size: number;
      if (small.has(o)) {
        let bytes: Buffer;
        try {
          // One byte more than recorded: a longer object is told apart (verify refuses it).
          bytes = await readPrefix(this.storage, o.object.key, o.object.size + 1);
        } catch (err) {
          if (err instanceof ObjectNotFoundError) throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} is missing`);
          throw err;
        }
        size = bytes.length;
        this.inMemory.set(o.backup, bytes.subarray(0, o.object.size));
      } else {
        const st = await this.storage.stat(o.object.key);
        if (!st) throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} is missing`);
        size = st.size;
      }
      if (size < o.object.size) throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} is truncated: ${size} of ${o.object.size} bytes stored`);
      if (exact && size > o.object.size) {
        // (A small object was read one byte past its size: how many more there are, the listing says.)
        if (small.has(o)) size = (await this.storage.stat(o.object.key))?.size ?? size;
        throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} has ${size - o.object.size} bytes more than its manifest records (${size} stored, ${o.object.size} written): bytes were added after the backup`);
      }
    });
  }

  private objectOf(backup: string): DataObject {
    const o = this.objects.get(backup);
    if (!o) throw new CouchtroveError(`catalog refers to backup ${backup}, which is not part of this backup's chain`);
    return o;
  }

  /** Streams every file through the sink; throws an error naming the object and file on any mismatch. */
  async run(files: FileEntry[], sink: FileSink, progress?: (p: Progress) => void, phase: Progress['phase'] = 'restore'): Promise<void> {
    const bytesTotal = files.reduce((n, f) => n + f.size, 0);
    const report = () => progress?.({ phase, bytesDone: state.done.bytes, bytesTotal, filesDone: state.done.files, filesTotal: files.length });
    const recordSize = Math.max(...[...this.objects.values()].map((o) => o.recordSize));
    // The first failure is the one reported; it stops the other lanes at their next record.
    const state: LaneState = { failure: null, done: { bytes: 0, files: 0 }, report };
    // One file more than a lane's share would leave the other workers idle while its lane decodes it: it is
    // spread. The rest stay in lanes, whose workers hash them in parallel; spreading every file put every
    // byte's SHA-256 on this thread: a 4 GiB tree restored in 9.5-10.6 s against 8.9-10.3 s in lanes
    // (1 GiB: the same, 2.0-2.1 s; docs/benchmarks.md).
    const lanes = this.pool.lanes;
    const spread = lanes > 1 ? files.filter((f) => f.size > bytesTotal / lanes && f.extents.reduce((n, e) => n + e.records, 0) > 0) : [];
    const laned = spread.length ? files.filter((f) => !spread.includes(f)) : files;
    const fail = (err: unknown) => {
      state.failure ??= { error: err };
    };
    if (spread.length) await this.runLane(null, spread, sink, recordSize, state).catch(fail);
    if (!state.failure) await Promise.all(shareOut(laned, lanes).map((laneFiles, lane) => this.runLane(lane, laneFiles, sink, recordSize, state).catch(fail)));
    if (state.failure) throw state.failure.error;
    report();
  }

  /**
   * Decodes `files` in order, on worker `lane` (which hashes), or with lane null on any free worker, this
   * thread hashing the plain text it hands back.
   */
  private async runLane(lane: number | null, files: FileEntry[], sink: FileSink, recordSize: number, state: LaneState): Promise<void> {
    const { done, report } = state;
    type Item = { file: FileEntry; expected: string | null; decoded: ReturnType<RecordPool['decode']>; where: string; last: boolean; hash: Hash | null };
    // Spread out, every worker has a task and the next ones wait, read: the pool's depth.
    const buffers = lane === null ? this.pool.depth : PAYLOADS_PER_LANE;
    const payloads: Buffer[] = Array.from({ length: buffers }, () => Buffer.allocUnsafeSlow(maxRecordBytes(recordSize)));
    const plains: Buffer[] = lane === null ? Array.from({ length: buffers }, () => Buffer.allocUnsafeSlow(recordSize)) : [];
    const inflight: Item[] = [];
    const runs = runLengths(files);
    const sizes = new Map<FileEntry, number>();
    const at: { cursor: Cursor | null } = { cursor: null };

    const finish = async (file: FileEntry, where: string): Promise<void> => {
      const size = sizes.get(file) ?? 0;
      sizes.delete(file);
      if (size !== file.size) throw new CouchtroveError(`checksum mismatch for file ${file.path} (${where}): expected ${file.size} bytes, got ${size}`);
      await sink.end(file);
      done.files++;
    };

    // Results come back in submission order: a lane's tasks all run on one thread, one after another.
    const consume = async (): Promise<void> => {
      const item = inflight.shift()!;
      let r;
      try {
        r = await item.decoded;
      } catch (err) {
        if (!(err instanceof RecordTaskError)) throw err;
        const what = err.kind === 'auth' ? WRONG_KEY : err.kind === 'io' ? 'cannot write' : `corrupted data (${err.message})`;
        throw new CouchtroveError(`${what}: ${item.where}, file ${item.file.path}${err.kind === 'io' ? `: ${err.message}` : ''}`);
      }
      recordDone();
      payloads.push(Buffer.from(r.payload.buffer));
      let digest = r.digest;
      if (r.plain) {
        const plain = Buffer.from(r.plain.buffer);
        item.hash!.update(plain.subarray(0, r.length));
        plains.push(plain);
        if (item.expected !== null) digest = item.hash!.digest('hex');
      }
      const size = (sizes.get(item.file) ?? 0) + r.length;
      sizes.set(item.file, size);
      sink.written?.(item.file, size);
      done.bytes += r.length;
      if (item.expected !== null && digest !== item.expected) {
        throw new CouchtroveError(`checksum mismatch for file ${item.file.path} (${item.where}): its bytes hash to ${digest}, the catalog says ${item.expected}`);
      }
      if (item.last) await finish(item.file, item.where);
      report();
    };

    const seek = async (e: Extent): Promise<Cursor> => {
      const c = at.cursor;
      if (c && c.backup === e.backup && (c.pos === e.offset || c.reader.moveTo)) {
        c.reader.moveTo?.(e.offset);
        c.pos = e.offset;
        return c;
      }
      await c?.reader.close();
      const o = this.objectOf(e.backup);
      let reader: RecordSource;
      const bytes = this.inMemory.get(e.backup);
      try {
        reader = bytes
          ? new MemoryReader(bytes, e.offset)
          : this.storage.open
          ? new HandleReader(await this.storage.open(o.object.key), e.offset)
          : new StreamReader(await this.storage.get(o.object.key, { offset: e.offset, length: runs.get(e) ?? e.length }));
      } catch (err) {
        if (err instanceof ObjectNotFoundError) throw new CouchtroveError(`object ${o.object.key} of backup ${e.backup} is missing`);
        throw err;
      }
      return (at.cursor = { backup: e.backup, reader, pos: e.offset });
    };

    const readExact = async (c: Cursor, target: Buffer, n: number, file: FileEntry): Promise<Buffer> => {
      const got = await c.reader.readInto(target, n);
      if (got < n) throw new CouchtroveError(`object ${this.objectOf(c.backup).object.key} is truncated: it ends at byte ${c.pos + got}, file ${file.path} needs bytes up to ${c.pos + n}`);
      c.pos += n;
      return target.subarray(0, n);
    };

    try {
      for (const file of files) {
        if (state.failure) return;
        const fd = await sink.begin(file);
        const total = file.extents.reduce((n, e) => n + e.records, 0);
        if (total === 0) {
          // Nothing stored: an empty file (its hash is that of no bytes).
          if (file.sha256 !== null && file.sha256 !== sha256Hex('')) throw new CouchtroveError(`checksum mismatch for file ${file.path} (no data): the catalog says ${file.sha256}`);
          await finish(file, 'no data');
          continue;
        }
        // A file with a whole-file SHA-256 is checked by it; a file built on a parent's bytes (sha256
        // null) extent by extent. Either way every byte is hashed once.
        const fileStream = nextStream++;
        const fileHash = lane === null && file.sha256 !== null ? createHash('sha256') : null;
        let position = 0;
        let seen = 0;
        for (const e of file.extents) {
          const o = this.objectOf(e.backup);
          const c = await seek(e);
          const stream = file.sha256 !== null ? fileStream : nextStream++;
          const hash = lane === null ? (fileHash ?? createHash('sha256')) : null;
          for (let r = 0; r < e.records; r++) {
            while (payloads.length === 0) await consume();
            if (state.failure) return;
            const where = `object ${o.object.key} at offset ${c.pos}`;
            const header = Buffer.from(await readExact(c, Buffer.allocUnsafe(HEADER_BYTES), HEADER_BYTES, file));
            const { payloadLength, plainLength } = parseHeader(header);
            const payloadBuf = payloads.pop()!;
            if (payloadLength > payloadBuf.length || plainLength > recordSize || position + plainLength > file.size) {
              throw new CouchtroveError(`corrupted data: ${where}, file ${file.path} (impossible record header)`);
            }
            const payload = await readExact(c, payloadBuf, payloadLength, file);
            seen++;
            const final = file.sha256 !== null ? seen === total : r === e.records - 1;
            const decoded = this.pool.decode(lane, {
              codec: o.codec,
              key: o.keys?.data ?? null,
              index: e.record + r,
              header,
              payload,
              // As many plain-text buffers as payload buffers: one is free whenever a payload is.
              plain: lane === null ? plains.pop()! : null,
              hash: lane === null ? null : { stream, final },
              write: fd === null ? null : { fd, position },
            });
            decoded.catch(() => undefined);
            position += plainLength;
            inflight.push({ file, expected: final ? (file.sha256 ?? e.sha256) : null, decoded, where, last: seen === total, hash });
          }
        }
      }
      while (inflight.length) await consume();
    } finally {
      // Nothing may still write to a descriptor once run() returns: the caller closes them.
      await Promise.allSettled(inflight.map((i) => i.decoded));
      await at.cursor?.reader.close();
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
