// Decoding the data stream: reads the records of every file's extents from storage (one sequential
// stream per data object while reads stay contiguous), decodes them in the worker pool in order,
// and checks each file's size and SHA-256 before handing its last bytes on.
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ObjectNotFoundError, type Backend } from '../storage/backend.js';
import type { BackupKeys } from '../crypto/keys.js';
import type { Codec } from '../config/catalogue.js';
import { CouchtroveError } from '../util/errors.js';
import type { Extent, FileEntry, StoredObject } from './format.js';
import { HEADER_BYTES, maxRecordBytes, parseHeader, RecordAuthError } from './records.js';
import { RecordPool, RecordTaskError } from './pool.js';
import { WRONG_KEY } from './repository.js';
import type { Progress } from './types.js';
import { recordDone } from '../util/gc.js';

/** Exact-length reads from a stream. */
class StreamReader {
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
  reader: StreamReader;
  pos: number;
}

export interface FileSink {
  begin(file: FileEntry): Promise<void>;
  write(file: FileEntry, data: Buffer): Promise<void>;
  /** Called after the file's size and SHA-256 have been checked. */
  end(file: FileEntry): Promise<void>;
}

/** Records written to the sink while the next ones are decoded. */
const WRITES_AHEAD = 1;

export class DataDecoder {
  private cursor: Cursor | null = null;
  private readonly pool = new RecordPool();

  constructor(
    private readonly storage: Backend,
    private readonly objects: Map<string, DataObject>,
  ) {}

  /** Missing or short objects fail here, before anything is written. */
  async checkObjects(): Promise<void> {
    for (const o of this.objects.values()) {
      const st = await this.storage.stat(o.object.key);
      if (!st) throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} is missing`);
      if (st.size < o.object.size) throw new CouchtroveError(`object ${o.object.key} of backup ${o.backup} is truncated: ${st.size} of ${o.object.size} bytes stored`);
    }
  }

  private async seek(backup: string, offset: number): Promise<Cursor> {
    if (this.cursor && this.cursor.backup === backup && this.cursor.pos === offset) return this.cursor;
    await this.cursor?.reader.close();
    const o = this.objectOf(backup);
    let stream: Readable;
    try {
      stream = await this.storage.get(o.object.key, { offset });
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw new CouchtroveError(`object ${o.object.key} of backup ${backup} is missing`);
      throw err;
    }
    this.cursor = { backup, reader: new StreamReader(stream), pos: offset };
    return this.cursor;
  }

  private objectOf(backup: string): DataObject {
    const o = this.objects.get(backup);
    if (!o) throw new CouchtroveError(`catalog refers to backup ${backup}, which is not part of this backup's chain`);
    return o;
  }

  private async readExact(c: Cursor, target: Buffer, n: number, file: FileEntry): Promise<Buffer> {
    const got = await c.reader.readInto(target, n);
    const o = this.objectOf(c.backup);
    if (got < n) throw new CouchtroveError(`object ${o.object.key} is truncated: it ends at byte ${c.pos + got}, file ${file.path} needs bytes up to ${c.pos + n}`);
    const buf = target.subarray(0, n);
    c.pos += n;
    return buf;
  }

  /** Streams every file through the sink; throws an error naming the object and file on any mismatch. */
  async run(files: FileEntry[], sink: FileSink, progress?: (p: Progress) => void, phase: Progress['phase'] = 'restore'): Promise<void> {
    const bytesTotal = files.reduce((n, f) => n + f.size, 0);
    let bytesDone = 0;
    let filesDone = 0;
    // Buffers for stored records and for plain text, lent to the workers and reused.
    const recordSize = Math.max(...[...this.objects.values()].map((o) => o.recordSize));
    const slots = this.pool.depth + 1;
    const payloads: Buffer[] = Array.from({ length: slots }, () => Buffer.allocUnsafeSlow(maxRecordBytes(recordSize)));
    // Plain-text buffers also cover the sink's writes in flight: writing one record overlaps with
    // reading, hashing and decoding the next ones.
    const plains: Buffer[] = Array.from({ length: slots + WRITES_AHEAD }, () => Buffer.allocUnsafeSlow(recordSize));
    const writing = new Map<FileEntry, Set<Promise<void>>>();
    const writes = () => [...writing.values()].flatMap((w) => [...w]);
    type Item = { file: FileEntry; extent: Extent | null; decoded: Promise<{ payload: Uint8Array; out: Uint8Array; length: number }> | null; where: string; endOfExtent: boolean; last: boolean };
    const inflight: Item[] = [];
    const hashes = new Map<FileEntry, { hash: Hash; size: number }>();
    const extentHashes = new Map<Extent, Hash>();

    const consume = async (): Promise<void> => {
      const item = inflight.shift()!;
      let data: Buffer = Buffer.alloc(0);
      let plain: Buffer | undefined;
      if (item.decoded) {
        let r;
        try {
          r = await item.decoded;
        } catch (err) {
          if (err instanceof RecordTaskError) {
            const what = err.cause instanceof RecordAuthError ? WRONG_KEY : `corrupted data (${err.message})`;
            throw new CouchtroveError(`${what}: ${item.where}, file ${item.file.path}`);
          }
          throw err;
        }
        recordDone();
        payloads.push(Buffer.from(r.payload.buffer));
        plain = Buffer.from(r.out.buffer);
        data = plain.subarray(0, r.length);
      }
      const h = hashes.get(item.file)!;
      // A file with a whole-file SHA-256 is checked by it; only files built on a parent's bytes
      // (sha256 null) are checked extent by extent. Either way every byte is hashed once.
      if (item.file.sha256 !== null) h.hash.update(data);
      else if (item.extent) {
        const eh = extentHashes.get(item.extent) ?? createHash('sha256');
        extentHashes.set(item.extent, eh.update(data));
        if (item.endOfExtent) {
          extentHashes.delete(item.extent);
          const digest = eh.digest('hex');
          if (digest !== item.extent.sha256) {
            throw new CouchtroveError(`checksum mismatch for file ${item.file.path} (${item.where}): the bytes stored in backup ${item.extent.backup} hash to ${digest}, its catalog says ${item.extent.sha256}`);
          }
        }
      }
      h.size += data.length;
      bytesDone += data.length;
      // The sink is done with the buffer when write resolves; only then may it be lent again.
      const pending = writing.get(item.file) ?? new Set<Promise<void>>();
      writing.set(item.file, pending);
      const w: Promise<void> = sink.write(item.file, data).then(() => {
        pending.delete(w);
        if (plain) plains.push(plain);
      });
      w.catch(() => undefined);
      pending.add(w);
      if (item.last) {
        // Written whole before the sink ends the file (which flushes it to disk).
        await Promise.all(pending);
        writing.delete(item.file);
        hashes.delete(item.file);
        const digest = h.hash.digest('hex');
        if (h.size !== item.file.size || (item.file.sha256 !== null && digest !== item.file.sha256)) {
          throw new CouchtroveError(`checksum mismatch for file ${item.file.path} (${item.where}): expected ${item.file.size} bytes with SHA-256 ${item.file.sha256}, got ${h.size} bytes with ${digest}`);
        }
        await sink.end(item.file);
        filesDone++;
      }
      progress?.({ phase, bytesDone, bytesTotal, filesDone, filesTotal: files.length });
    };

    try {
      for (const file of files) {
        await sink.begin(file);
        hashes.set(file, { hash: createHash('sha256'), size: 0 });
        const total = file.extents.reduce((n, e) => n + e.records, 0);
        if (total === 0) inflight.push({ file, extent: null, decoded: null, where: 'no data', endOfExtent: false, last: true });
        let seen = 0;
        for (const e of file.extents) {
          const o = this.objectOf(e.backup);
          const c = await this.seek(e.backup, e.offset);
          for (let r = 0; r < e.records; r++) {
            while (payloads.length === 0 || plains.length === 0) await (inflight.length ? consume() : Promise.race(writes()));
            const where = `object ${o.object.key} at offset ${c.pos}`;
            const header = Buffer.from(await this.readExact(c, Buffer.allocUnsafe(HEADER_BYTES), HEADER_BYTES, file));
            const { payloadLength, plainLength } = parseHeader(header);
            const payloadBuf = payloads.pop()!;
            if (payloadLength > payloadBuf.length || plainLength > recordSize) {
              throw new CouchtroveError(`corrupted data: ${where}, file ${file.path} (impossible record header)`);
            }
            const payload = await this.readExact(c, payloadBuf, payloadLength, file);
            const decoded = this.pool.decode({ codec: o.codec, key: o.keys?.data ?? null, index: e.record + r, header, payload, out: plains.pop()! });
            decoded.catch(() => undefined);
            seen++;
            inflight.push({ file, extent: e, decoded, where, endOfExtent: r === e.records - 1, last: seen === total });
            if (inflight.length >= this.pool.depth) await consume();
          }
        }
      }
      while (inflight.length) await consume();
      await Promise.all(writes());
    } finally {
      await Promise.allSettled(inflight.map((i) => i.decoded));
      await Promise.allSettled(writes());
      await this.cursor?.reader.close();
      this.cursor = null;
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
