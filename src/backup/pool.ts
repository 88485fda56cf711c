// A small pool of worker threads for record encoding and decoding. Callers keep results in order by
// awaiting the promises in submission order, and bound how many are in flight (memory stays flat).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Codec } from '../config/catalogue.js';
import { decodeRecordInto, encodeRecord, maxRecordBytes, RecordAuthError, RecordCorruptError } from './records.js';

export type WorkerTask =
  | { id: number; op: 'encode'; codec: Codec; level: number; key: Uint8Array | null; index: number; plain: Uint8Array }
  | { id: number; op: 'decode'; codec: Codec; key: Uint8Array | null; index: number; header: Uint8Array; payload: Uint8Array; out: Uint8Array };

export type WorkerReply =
  | { id: number; ok: true; op: 'encode'; plain: Uint8Array; record: Uint8Array }
  | { id: number; ok: true; op: 'decode'; payload: Uint8Array; out: Uint8Array; length: number }
  | { id: number; ok: false; auth: boolean; message: string; buffers: Uint8Array[] };

type Ok<O> = Extract<WorkerReply, { ok: true; op: O }>;
type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
type Pending = { resolve: (r: WorkerReply) => void; reject: (e: Error) => void };

/** A failed record, with the buffers the task lent so the caller can take them back. */
export class RecordTaskError extends Error {
  constructor(
    override readonly cause: RecordAuthError | RecordCorruptError,
    readonly buffers: Uint8Array[],
  ) {
    super(cause.message);
  }
}

/** Buffers lent to a worker: each one's whole ArrayBuffer moves, without a copy. */
function lent(task: DistributiveOmit<WorkerTask, 'id'>): ArrayBuffer[] {
  const views = task.op === 'encode' ? [task.plain] : [task.payload, task.out];
  return views.map((v) => v.buffer as ArrayBuffer);
}

let scratch = new Uint8Array(0);

/** Runs one task on the calling thread: in a worker, or inline while no worker is up yet. */
export function runTask(task: WorkerTask): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  try {
    if (task.op === 'encode') {
      const need = maxRecordBytes(task.plain.length);
      if (scratch.length < need) scratch = new Uint8Array(need);
      const record = encodeRecord(task.codec, task.level, task.key, task.index, task.plain, scratch);
      return { reply: { id: task.id, ok: true, op: 'encode', plain: task.plain, record }, transfer: [task.plain.buffer as ArrayBuffer, record.buffer as ArrayBuffer] };
    }
    const length = decodeRecordInto(task.codec, task.key, task.index, task.header, task.payload, task.out);
    return { reply: { id: task.id, ok: true, op: 'decode', payload: task.payload, out: task.out, length }, transfer: [task.payload.buffer as ArrayBuffer, task.out.buffer as ArrayBuffer] };
  } catch (err) {
    const buffers = task.op === 'encode' ? [task.plain] : [task.payload, task.out];
    return { reply: { id: task.id, ok: false, auth: err instanceof RecordAuthError, message: (err as Error).message, buffers }, transfer: buffers.map((b) => b.buffer as ArrayBuffer) };
  }
}

export class RecordPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly queue: { task: WorkerTask; transfer: ArrayBuffer[] }[] = [];
  /** Workers that have started and wait for a task. */
  private readonly idle: Worker[] = [];
  private started = 0;
  private nextId = 0;
  private failure: Error | undefined;
  /** How many tasks a caller should keep in flight to keep every worker busy. */
  readonly depth: number;

  /** `size` workers; none runs every task inline (a small job need not pay for starting threads). */
  constructor(size = Math.max(1, Math.min(availableParallelism(), 8))) {
    this.depth = Math.max(1, size) * 2;
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL('./worker.js', import.meta.url));
      w.on('message', (r: WorkerReply | 'ready') => {
        if (r === 'ready') {
          this.started++;
          this.idle.push(w);
          this.dispatch();
        } else this.onReply(w, r);
      });
      w.on('error', (e) => this.fail(e));
      this.workers.push(w);
    }
  }

  encode(task: Omit<Extract<WorkerTask, { op: 'encode' }>, 'id' | 'op'>): Promise<Ok<'encode'>> {
    return this.run({ ...task, op: 'encode' }) as Promise<Ok<'encode'>>;
  }

  decode(task: Omit<Extract<WorkerTask, { op: 'decode' }>, 'id' | 'op'>): Promise<Ok<'decode'>> {
    return this.run({ ...task, op: 'decode' }) as Promise<Ok<'decode'>>;
  }

  private run(task: DistributiveOmit<WorkerTask, 'id'>): Promise<WorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // A worker takes ~50 ms to start: until one has, the caller's thread does the work.
      if (this.started === 0) this.settle(runTask({ ...task, id } as WorkerTask).reply);
      else {
        this.queue.push({ task: { ...task, id } as WorkerTask, transfer: lent(task) });
        this.dispatch();
      }
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const { task, transfer } = this.queue.shift()!;
      w.postMessage(task, transfer);
    }
  }

  private onReply(w: Worker, r: WorkerReply): void {
    this.idle.push(w);
    this.settle(r);
    this.dispatch();
  }

  private settle(r: WorkerReply): void {
    const p = this.pending.get(r.id);
    this.pending.delete(r.id);
    if (p) {
      if (r.ok) p.resolve(r);
      else p.reject(new RecordTaskError(r.auth ? new RecordAuthError(r.message) : new RecordCorruptError(r.message), r.buffers));
    }
  }

  private fail(e: Error): void {
    this.failure = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
