// A small pool of worker threads for record encoding and decoding. Callers keep results in order by
// awaiting the promises in submission order, and bound how many are in flight (memory stays flat).
//
// Encoding tasks go to any free worker. Decoding tasks either are pinned to one worker (a lane), which
// also hashes the plain text and writes it out: a file's SHA-256 is sequential, so all of that file's
// records pass through one thread, in order, and the caller's thread only reads (many files, one per
// lane). Or they go to any free worker, which decodes into a plain-text buffer lent with the task and
// writes it, and hands the buffer back for the caller to hash in order: one huge file then decodes on
// every core, and the hashing runs on the caller's thread, which otherwise only reads.
import { createHash, type Hash } from 'node:crypto';
import { readSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Codec } from '../config/catalogue.js';
import { decodeRecordInto, encodeRecord, parseHeader, RecordAuthError } from './records.js';

/**
 * With `hash`, a decoded record's plain text is added to hash stream `stream` of the worker (created on
 * first use); `final` returns that stream's digest and forgets it. With `plain`, it is decoded into that
 * lent buffer (plainLength bytes at least), which comes back with the reply. With `write`, it is also
 * written to `fd` at `position`.
 */
export interface DecodeTask {
  id: number;
  op: 'decode';
  codec: Codec;
  key: Uint8Array | null;
  index: number;
  header: Uint8Array;
  payload: Uint8Array;
  plain: Uint8Array | null;
  hash: { stream: number; final: boolean } | null;
  write: { fd: number; position: number } | null;
}

/**
 * The record is written into `out` (maxRecordBytes of the plain length). With `read`, `plain` is first
 * filled from `fd` at `position`: reading a huge file on the caller's thread, which also hashes it, had
 * made that thread the backup's bottleneck (docs/benchmarks.md, "One huge file").
 */
export interface EncodeTask {
  id: number;
  op: 'encode';
  codec: Codec;
  level: number;
  key: Uint8Array | null;
  index: number;
  plain: Uint8Array;
  out: Uint8Array;
  read: { fd: number; position: number } | null;
}

export type WorkerTask = EncodeTask | DecodeTask;

/** kind: what failed — authentication, decoding, writing the plain text out, or reading it (the file is shorter). */
export type WorkerReply =
  | { id: number; ok: true; op: 'encode'; plain: Uint8Array; out: Uint8Array; length: number }
  | { id: number; ok: true; op: 'decode'; payload: Uint8Array; plain: Uint8Array | null; length: number; digest: string | null }
  | { id: number; ok: false; kind: FailureKind; message: string; buffers: Uint8Array[] };

type FailureKind = 'auth' | 'corrupt' | 'io' | 'short';

type Ok<O> = Extract<WorkerReply, { ok: true; op: O }>;
type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
type Pending = { resolve: (r: WorkerReply) => void; reject: (e: Error) => void };

/** A failed record, with the buffers the task lent so the caller can take them back. */
export class RecordTaskError extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly buffers: Uint8Array[],
  ) {
    super(message);
  }
}

/** The buffers a task lends: each one's whole ArrayBuffer moves to the worker and back, without a copy. */
function lent(task: DistributiveOmit<WorkerTask, 'id'>): Uint8Array[] {
  return task.op === 'encode' ? [task.plain, task.out] : task.plain ? [task.payload, task.plain] : [task.payload];
}

// Writes go to the page cache in pieces of at most 512 KiB. On this VM (Linux 6.18, ext4) a 2 MiB write
// cost 5-6x the kernel time of the same bytes in writes of 1 MiB or less (`dd bs=2M` alike: 1.0-1.4 s
// per GiB against 0.21 s), probably as it takes a 2 MiB page-cache folio: a third of a restore's CPU.
const WRITE_PIECE = 512 * 1024;

// Per-thread state: the decoder's plain-text buffer, open hash streams.
let plain = new Uint8Array(0);
const hashes = new Map<number, Hash>();

function decode(task: DecodeTask): { length: number; digest: string | null } {
  const { plainLength } = parseHeader(task.header);
  let into = task.plain;
  if (!into) {
    if (plain.length < plainLength) plain = new Uint8Array(plainLength);
    into = plain;
  }
  const length = decodeRecordInto(task.codec, task.key, task.index, task.header, task.payload, into);
  const data = into.subarray(0, length);
  let hash: Hash | undefined;
  if (task.hash) {
    hash = hashes.get(task.hash.stream);
    if (!hash) hashes.set(task.hash.stream, (hash = createHash('sha256')));
    hash.update(data);
  }
  if (task.write) {
    try {
      for (let done = 0; done < length; ) done += writeSync(task.write.fd, data, done, Math.min(WRITE_PIECE, length - done), task.write.position + done);
    } catch (err) {
      throw new WriteError((err as Error).message);
    }
  }
  if (!task.hash?.final || !hash) return { length, digest: null };
  hashes.delete(task.hash.stream);
  return { length, digest: hash.digest('hex') };
}

class WriteError extends Error {}

/** The file ended partway into a read: it shrank since it was measured. The message is how many bytes were read. */
class ShortReadError extends Error {}

function readInto(fd: number, into: Uint8Array, position: number): void {
  let got = 0;
  for (let n = -1; got < into.length && n !== 0; got += n) n = readSync(fd, into, got, into.length - got, position + got);
  if (got < into.length) throw new ShortReadError(String(got));
}

/** Runs one task on the calling thread: in a worker, or inline while no worker is up yet. */
export function runTask(task: WorkerTask): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  // Whatever happens, the lent buffers go back.
  const buffers = lent(task);
  const transfer = buffers.map((b) => b.buffer as ArrayBuffer);
  try {
    if (task.op === 'encode') {
      if (task.read) readInto(task.read.fd, task.plain, task.read.position);
      const { length } = encodeRecord(task.codec, task.level, task.key, task.index, task.plain, task.out);
      return { reply: { id: task.id, ok: true, op: 'encode', plain: task.plain, out: task.out, length }, transfer };
    }
    const { length, digest } = decode(task);
    return { reply: { id: task.id, ok: true, op: 'decode', payload: task.payload, plain: task.plain, length, digest }, transfer };
  } catch (err) {
    if (task.op === 'decode' && task.hash) hashes.delete(task.hash.stream);
    const kind = err instanceof RecordAuthError ? 'auth' : err instanceof WriteError ? 'io' : err instanceof ShortReadError ? 'short' : 'corrupt';
    return { reply: { id: task.id, ok: false, kind, message: (err as Error).message, buffers }, transfer };
  }
}

interface Slot {
  worker: Worker;
  ready: boolean;
  /** Set to 1 by the worker once it listens: seen without a turn of the event loop (see run()). */
  started: Int32Array;
  /** Tasks posted and not yet answered. */
  busy: number;
  /** Pinned tasks waiting for this worker to start. */
  waiting: WorkerTask[];
}

export class RecordPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  /** Unpinned tasks waiting for an idle worker. */
  private readonly queue: WorkerTask[] = [];
  private nextId = 0;
  private failure: Error | undefined;
  /** How many tasks a caller should keep in flight to keep every worker busy. */
  readonly depth: number;
  /** How many lanes decode tasks can be pinned to (one per worker, or the caller's thread). */
  readonly lanes: number;

  /** `size` workers; none runs every task inline (a small job need not pay for starting threads). */
  constructor(size = Math.max(1, Math.min(availableParallelism(), 8))) {
    this.lanes = Math.max(1, size);
    // Inline, a task is done when it is submitted: nothing to keep in flight.
    this.depth = size === 0 ? 1 : this.lanes * 2;
    for (let i = 0; i < size; i++) {
      const started = new Int32Array(new SharedArrayBuffer(4));
      const slot: Slot = { worker: new Worker(new URL('./worker.js', import.meta.url), { workerData: { started } }), ready: false, started, busy: 0, waiting: [] };
      slot.worker.on('message', (r: WorkerReply | 'ready') => {
        if (r === 'ready') this.setReady(slot);
        else {
          slot.busy--;
          this.settle(r);
        }
        this.dispatch();
      });
      slot.worker.on('error', (e) => this.fail(e));
      this.slots.push(slot);
    }
  }

  encode(task: Omit<EncodeTask, 'id' | 'op'>): Promise<Ok<'encode'>> {
    return this.run({ ...task, op: 'encode' }) as Promise<Ok<'encode'>>;
  }

  /**
   * Decodes on lane `lane`'s thread: tasks of one lane run there one after another, in order. With lane
   * null, on any free worker (a task that hashes must then not need the others of its stream there).
   */
  decode(lane: number | null, task: Omit<DecodeTask, 'id' | 'op'>): Promise<Ok<'decode'>> {
    return this.run({ ...task, op: 'decode' }, lane ?? undefined) as Promise<Ok<'decode'>>;
  }

  private run(task: DistributiveOmit<WorkerTask, 'id'>, lane?: number): Promise<WorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    const t = { ...task, id: this.nextId++ } as WorkerTask;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(t.id, { resolve, reject });
      const pinned = lane === undefined ? undefined : this.slots[lane % this.lanes];
      // A worker takes ~50 ms to start: until one has, the caller's thread does unpinned work. Whether
      // one has is read from the shared flag, not only from its 'ready' message: a caller whose reads
      // and writes complete synchronously (the file driver) never gives the event loop a turn while
      // every task runs inline, and so did a whole 1 GiB file on its own thread, workers idle.
      if (!pinned && !this.slots.some((s) => s.ready)) this.markStarted();
      if (this.slots.length === 0 || (!pinned && !this.slots.some((s) => s.ready))) this.settle(runTask(t).reply);
      else if (pinned?.ready) this.post(pinned, t);
      else if (pinned) pinned.waiting.push(t);
      else {
        this.queue.push(t);
        this.dispatch();
      }
    });
  }

  /** Workers that listen already, though their 'ready' message is still queued: ready. */
  private markStarted(): void {
    for (const slot of this.slots) if (Atomics.load(slot.started, 0) === 1) this.setReady(slot);
  }

  /** Once: the tasks pinned to the worker while it started go to it. */
  private setReady(slot: Slot): void {
    if (slot.ready) return;
    slot.ready = true;
    for (const task of slot.waiting.splice(0)) this.post(slot, task);
  }

  private post(slot: Slot, task: WorkerTask): void {
    slot.busy++;
    slot.worker.postMessage(task, lent(task).map((b) => b.buffer as ArrayBuffer));
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.ready && slot.busy === 0) this.post(slot, this.queue.shift()!);
    }
  }

  private settle(r: WorkerReply): void {
    const p = this.pending.get(r.id);
    this.pending.delete(r.id);
    if (p) {
      if (r.ok) p.resolve(r);
      else p.reject(new RecordTaskError(r.kind, r.message, r.buffers));
    }
  }

  private fail(e: Error): void {
    this.failure = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
