// The in-progress marker of a backup being written (docs/backup-format.md, "Objects"): who writes it,
// what it builds on, and a heartbeat. `delete` refuses a backup whose writer is alive, and a backup that
// a live writer builds on; a writer that stopped beating (killed, host gone) no longer holds anything.
import { hostname } from 'node:os';
import { ObjectNotFoundError, type Backend } from '../storage/backend.js';
import { keys } from './format.js';
import { putBuffer, readObject } from './repository.js';

export interface LockBody {
  id: string;
  host: string;
  pid: number;
  started: string;
  /** Rewritten every HEARTBEAT_MS while the backup is written. */
  heartbeat: string;
  /** Backups whose data the new one may use (its parent and the parent's ancestors). */
  depends: string[];
}

/** How often a writer rewrites its lock, and how long without it before the lock counts as dead. */
export const HEARTBEAT_MS = 30_000;
export const STALE_MS = 10 * HEARTBEAT_MS;

/** Backups this process is writing: its own locks it can judge exactly, whatever their heartbeat says. */
const writingHere = new Set<string>();

/** Whether the lock's writer may still be writing; `why` says what was seen. `lock.id` must be the backup's id. */
export function lockState(lock: Partial<LockBody>, now = Date.now()): { alive: boolean; why: string } {
  const beat = Date.parse(lock.heartbeat ?? lock.started ?? '');
  const who = `pid ${lock.pid} on ${lock.host}`;
  if (Number.isNaN(beat)) return { alive: false, why: `unreadable lock (${who})` };
  // A backup that failed while the storage was down cannot remove its lock: this process knows it gave up.
  if (lock.host === hostname() && lock.pid === process.pid && !writingHere.has(lock.id ?? '')) return { alive: false, why: `its writer (${who}, this process) gave it up` };
  if (lock.host === hostname() && Number.isInteger(lock.pid)) {
    // On this host the process table answers at once; the heartbeat still covers a reused pid.
    try {
      process.kill(lock.pid!, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { alive: false, why: `its writer (${who}) has exited` };
    }
  }
  const age = now - beat;
  if (age > STALE_MS) return { alive: false, why: `its writer (${who}) has not beaten since ${new Date(beat).toISOString()}` };
  return { alive: true, why: `being written by ${who}, started ${lock.started}, last heartbeat ${Math.max(0, Math.round(age / 1000))} s ago` };
}

export async function readLock(storage: Backend, id: string): Promise<Partial<LockBody> | null> {
  try {
    const lock = JSON.parse((await readObject(storage, keys.lock(id), 1 << 16)).toString('utf8')) as Partial<LockBody>;
    return lock && typeof lock === 'object' ? lock : {};
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    // Present but unreadable: a lock without a heartbeat, so dead.
    return {};
  }
}

/** Writes the lock, then rewrites it every `interval` ms until stop(). */
export class BackupLock {
  /** Resolves once the first write is stored. */
  readonly written: Promise<void>;
  #timer: NodeJS.Timeout | undefined;
  #pending: Promise<void> | null = null;

  constructor(private readonly storage: Backend, private readonly body: Omit<LockBody, 'heartbeat'>, interval = HEARTBEAT_MS) {
    writingHere.add(body.id);
    this.written = this.#write();
    this.written.catch(() => undefined);
    this.#timer = setInterval(() => {
      // A slow store skips a beat rather than queueing writes.
      if (this.#pending) return;
      this.#pending = this.written
        .then(() => this.#write())
        .catch(() => undefined)
        .finally(() => (this.#pending = null));
    }, interval);
    this.#timer.unref();
  }

  async #write(): Promise<void> {
    await putBuffer(this.storage, keys.lock(this.body.id), JSON.stringify({ ...this.body, heartbeat: new Date().toISOString() }));
  }

  /** Stops the heartbeat; no write of the lock is in flight once it resolves (so deleting it is final). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    writingHere.delete(this.body.id);
    await this.written.catch(() => undefined);
    await this.#pending;
  }

  /** Stops the heartbeat and removes the lock. */
  async release(): Promise<void> {
    await this.stop();
    await this.storage.delete(keys.lock(this.body.id)).catch(() => undefined);
  }
}

export function newLock(storage: Backend, id: string, depends: string[], interval?: number): BackupLock {
  return new BackupLock(storage, { id, host: hostname(), pid: process.pid, started: new Date().toISOString(), depends }, interval);
}
