// Cuts a stream into segments that can be sent again: a stream cannot be replayed, so a segment that must be
// retried is kept until it has been stored. Small segments stay in memory; larger ones go to a temporary file
// (mode 0600, removed once stored), so memory stays flat whatever the object size.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';

export interface Segment {
  /** 0-based position in the object. */
  index: number;
  size: number;
  /** Hex MD5 of the bytes (what Swift returns as ETag). */
  md5: string;
  /** True for the final segment of the stream. */
  last: boolean;
  /** A fresh body for each try: a Buffer, or a file stream. */
  body(): Buffer | Readable;
  /** Frees the memory or removes the temporary file; idempotent. */
  dispose(): Promise<void>;
}

export interface SpoolOptions {
  /** Segments up to this size are kept in memory (default 8 MiB). */
  memoryLimit?: number;
  /** Where larger segments are spooled (default COUCHTROVE_SPOOL_DIR, then the system temporary directory). */
  dir?: string;
}

/** A segment of bytes already in memory (a small object read whole). */
export function memorySegment(data: Buffer, index = 0): Segment {
  let held: Buffer | null = data;
  return {
    index, size: data.length, md5: createHash('md5').update(data).digest('hex'), last: true,
    body: () => {
      if (!held) throw new Error('segment already disposed');
      return held;
    },
    dispose: async () => {
      held = null;
    },
  };
}

export class SegmentReader {
  private readonly it: AsyncIterator<Buffer | string>;
  /** Bytes read from the source but not yet given out, in order. */
  private pending: Buffer[] = [];
  private ended = false;
  private index = 0;
  private readonly memoryLimit: number;
  private readonly dir: string;

  constructor(body: Readable, private readonly segmentSize: number, options: SpoolOptions = {}) {
    this.it = (body as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
    this.memoryLimit = options.memoryLimit ?? 8 * 1024 * 1024;
    this.dir = options.dir ?? process.env.COUCHTROVE_SPOOL_DIR ?? tmpdir();
  }

  private async pull(): Promise<Buffer | null> {
    const queued = this.pending.shift();
    if (queued) return queued;
    while (!this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return null;
      }
      const buf = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      if (buf.length > 0) return buf;
    }
    return null;
  }

  /** Whether anything is left after the current segment (reads ahead one chunk). */
  private async hasMore(): Promise<boolean> {
    if (this.pending.length) return true;
    const next = await this.pull();
    if (next) this.pending.unshift(next);
    return next !== null;
  }

  /**
   * Reads up to `limit` bytes without consuming them: `ended` tells whether that was the whole stream. The
   * bytes stay queued for next() unless the caller is done.
   */
  async peek(limit: number): Promise<{ data: Buffer; ended: boolean }> {
    const chunks: Buffer[] = [];
    let size = 0;
    while (size < limit) {
      const buf = await this.take(limit - size);
      if (!buf) break;
      chunks.push(buf);
      size += buf.length;
    }
    const ended = !(await this.hasMore());
    this.pending.unshift(...chunks);
    return { data: Buffer.concat(chunks, size), ended };
  }

  /** The next segment; the first call always returns one (possibly empty and last). */
  async next(): Promise<Segment> {
    const index = this.index++;
    return this.segmentSize <= this.memoryLimit ? this.nextInMemory(index) : this.nextInFile(index);
  }

  private async take(room: number): Promise<Buffer | null> {
    const buf = await this.pull();
    if (!buf) return null;
    if (buf.length <= room) return buf;
    this.pending.unshift(buf.subarray(room));
    return buf.subarray(0, room);
  }

  private async nextInMemory(index: number): Promise<Segment> {
    const chunks: Buffer[] = [];
    const hash = createHash('md5');
    let size = 0;
    while (size < this.segmentSize) {
      const buf = await this.take(this.segmentSize - size);
      if (!buf) break;
      hash.update(buf);
      chunks.push(buf);
      size += buf.length;
    }
    let data: Buffer | null = Buffer.concat(chunks, size);
    const last = !(await this.hasMore());
    return {
      index, size, md5: hash.digest('hex'), last,
      body: () => {
        if (!data) throw new Error('segment already disposed');
        return data;
      },
      dispose: async () => {
        data = null;
      },
    };
  }

  /**
   * The next segment, spooled to a temporary file; each chunk is also handed to onChunk (awaited) as it is
   * read, so the caller can send the segment while it is being spooled (the spool is for retries).
   */
  async nextStreamed(onChunk: (chunk: Buffer) => Promise<void>): Promise<Segment> {
    return this.nextInFile(this.index++, onChunk);
  }

  private async nextInFile(index: number, onChunk?: (chunk: Buffer) => Promise<void>): Promise<Segment> {
    await fs.mkdir(this.dir, { recursive: true });
    const file = path.join(this.dir, `couchtrove-segment-${process.pid}-${randomBytes(6).toString('hex')}`);
    const fh = await fs.open(file, 'wx', 0o600);
    let disposed = false;
    const dispose = async (): Promise<void> => {
      if (disposed) return;
      disposed = true;
      await fs.rm(file, { force: true });
    };
    try {
      const hash = createHash('md5');
      let size = 0;
      try {
        while (size < this.segmentSize) {
          const buf = await this.take(this.segmentSize - size);
          if (!buf) break;
          hash.update(buf);
          size += buf.length;
          // Spooling and sending at the same time: neither waits for the other.
          if (onChunk) await Promise.all([fh.write(buf, 0, buf.length), onChunk(buf)]);
          else await fh.write(buf, 0, buf.length);
        }
      } finally {
        await fh.close();
      }
      const last = !(await this.hasMore());
      return {
        index, size, md5: hash.digest('hex'), last,
        body: () => {
          if (disposed) throw new Error('segment already disposed');
          return createReadStream(file, { highWaterMark: 1024 * 1024 });
        },
        dispose,
      };
    } catch (err) {
      await dispose();
      throw err;
    }
  }

  /** Stops reading the source (after a failure). */
  async abort(): Promise<void> {
    this.pending = [];
    this.ended = true;
    try {
      await this.it.return?.();
    } catch {
      // The source's own error: it is closed either way.
    }
  }
}
