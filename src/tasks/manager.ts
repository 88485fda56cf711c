// Durable tasks. A task is a row (tables.tasks) written before it runs; its handler records steps as it
// goes. Several control-plane processes may share one PostgreSQL (issue 18), so a task belongs to the
// process that runs it (`owner`) for as long as that process renews its lease (`lease_until`). A sweep,
// at start and then every watchdogMs, takes over unfinished tasks whose lease ran out (their process died
// or hung): resumable ones run again here, the others are marked FAILED with the reason, once, and their
// handler's `failed` puts the instance or backup in a true state. Every write to a task row is a
// compare-and-set on owner, so a process that lost its lease (paused past it, say) stops at its next
// write. Deadlines are enforced by the owner, or by whoever takes an expired task over.
import { randomBytes, randomUUID } from 'node:crypto';
import * as os from 'node:os';
import type { StateStore, Row } from '../state/index.js';
import { now } from '../state/index.js';
import { describeError } from '../util/errors.js';

export interface TaskContext<P> {
  readonly task: Row<'tasks'>;
  readonly params: P;
  /** Aborted when the deadline passes or the manager stops. */
  readonly signal: AbortSignal;
  /** Records the step reached (durably) and refreshes the heartbeat. */
  step(name: string): Promise<void>;
  heartbeat(): Promise<void>;
  /** True when this run is a resume after an interruption. */
  readonly resumed: boolean;
}

export interface TaskHandler<P = unknown> {
  /** Whether an interrupted run may be started again (the handler must then be idempotent). */
  resumable: boolean;
  run(ctx: TaskContext<P>): Promise<void>;
  /** Puts the task's instance/backup in a true state after the task failed or expired. Must not throw. */
  failed(task: Row<'tasks'>, reason: string): Promise<void>;
}

export interface SubmitSpec {
  kind: string;
  projectId: string;
  instanceId?: string | null;
  backupId?: string | null;
  params?: unknown;
  /** Seconds the task may take. */
  timeout: number;
  id?: string;
}

export interface TaskManagerOptions {
  /** Sweep period, ms: deadlines, and taking over tasks whose lease ran out. */
  watchdogMs?: number;
  log?: (message: string) => void;
  /** How long a task stays this process's without a renewal, ms (default 15 s). */
  leaseMs?: number;
  /** How often leases are renewed, ms (default leaseMs / 3). */
  renewMs?: number;
  /** This process's id (default: processId()). */
  owner?: string;
  /**
   * No other process can use the store (SQLite: one process per state directory, src/state/lock.ts), so at
   * start every unfinished task is taken over at once, whatever its lease says. Default: store.kind === 'sqlite'.
   */
  exclusive?: boolean;
  /**
   * What a task is about, for the line logged when it ends ("instance ID (NAME)"); read when the task
   * starts running, so that a task that removes its instance still names it.
   */
  subject?: (task: Row<'tasks'>) => Promise<string>;
}

/** An id for this process, unique across hosts and restarts: host:pid:random. */
export function processId(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/** Thrown into a task whose lease another process took over: this process must stop writing it. */
export class LeaseLostError extends Error {
  constructor(id: string) {
    super(`task ${id}: the lease was lost (another process took the task over)`);
    this.name = 'LeaseLostError';
  }
}

/** A task that reached COMPLETED or FAILED (metrics listen for these). */
export interface TaskFinished {
  readonly task: Row<'tasks'>;
  readonly result: 'completed' | 'failed';
  /** From the task's creation (so queueing and a restart in between count) to now. */
  readonly seconds: number;
}

class StopError extends Error {
  constructor() {
    super('the control plane is stopping');
  }
}

export class TaskManager {
  private readonly handlers = new Map<string, TaskHandler<never>>();
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  /** Handler promises still settling after their task was abandoned (stop waits a little for them). */
  private readonly settling = new Set<Promise<unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly log: (m: string) => void;
  private readonly finishedListeners = new Set<(e: TaskFinished) => void>();
  /** This process's id, written in the owner column of every task it runs. */
  readonly owner: string;
  readonly leaseMs: number;
  private readonly exclusive: boolean;
  private sweeping: Promise<void> | null = null;

  constructor(private readonly store: StateStore, private readonly options: TaskManagerOptions = {}) {
    this.log = options.log ?? (() => undefined);
    this.owner = options.owner ?? processId();
    this.leaseMs = options.leaseMs ?? 15_000;
    this.exclusive = options.exclusive ?? store.kind === 'sqlite';
  }

  private leaseEnd(): string {
    return new Date(Date.now() + this.leaseMs).toISOString();
  }

  /** Calls listener whenever a task ends here, COMPLETED or FAILED; returns the unsubscribe. */
  onFinished(listener: (e: TaskFinished) => void): () => void {
    this.finishedListeners.add(listener);
    return () => this.finishedListeners.delete(listener);
  }

  /** What the task is about ('' when nothing, or unknown): never fails. */
  private about(task: Row<'tasks'>): Promise<string> {
    return this.options.subject ? this.options.subject(task).catch(() => '') : Promise.resolve('');
  }

  /**
   * One line per task that ends, with what it was about and how long it took from its creation: info when
   * it completed, error (FAILED) with the reason when not.
   */
  private async logEnd(task: Row<'tasks'>, result: TaskFinished['result'], reason: string | null, about: Promise<string>): Promise<void> {
    const what = await about;
    const seconds = Math.max(0, (Date.now() - Date.parse(task.created)) / 1000);
    this.log(`task ${task.id} (${task.kind})${what ? ` of ${what}` : ''} ${result === 'completed' ? 'completed' : 'FAILED'} in ${seconds.toFixed(1)} s${reason === null ? '' : `: ${reason}`}`);
  }

  private finished(task: Row<'tasks'>, result: TaskFinished['result']): void {
    const seconds = Math.max(0, (Date.now() - Date.parse(task.created)) / 1000);
    for (const l of this.finishedListeners) {
      // An observer's bug must not change a task's outcome.
      try {
        l({ task, result, seconds });
      } catch (err) {
        this.log(`task ${task.id}: finished listener: ${describeError(err)}`);
      }
    }
  }

  /** True between recover() (which starts the watchdog) and stop(): tasks can be started and are watched. */
  get alive(): boolean {
    return !this.stopped && this.timer !== undefined;
  }

  register<P>(kind: string, handler: TaskHandler<P>): void {
    this.handlers.set(kind, handler as TaskHandler<never>);
  }

  /** Writes the task as NEW. Call start(task) once the instance/backup rows point at it. */
  async create(spec: SubmitSpec): Promise<Row<'tasks'>> {
    if (!this.handlers.has(spec.kind)) throw new Error(`no handler for task kind ${spec.kind}`);
    const t = now();
    const row: Row<'tasks'> = {
      id: spec.id ?? randomUUID(),
      project_id: spec.projectId,
      kind: spec.kind,
      instance_id: spec.instanceId ?? null,
      backup_id: spec.backupId ?? null,
      status: 'NEW',
      params: JSON.stringify(spec.params ?? {}),
      step: null,
      error: null,
      attempts: 0,
      deadline: new Date(Date.now() + spec.timeout * 1000).toISOString(),
      heartbeat: t,
      // Ours from the start: no sweep elsewhere takes it between this insert and start().
      owner: this.owner,
      lease_until: this.leaseEnd(),
      created: t,
      updated: t,
    };
    await this.store.insert('tasks', row);
    return row;
  }

  /** Removes a NEW task that never started (its claim on the instance failed). */
  async discard(id: string): Promise<void> {
    await this.store.remove('tasks', id, { status: 'NEW' });
  }

  /** Runs the task in the background. */
  start(task: Row<'tasks'>): void {
    if (this.stopped || this.running.has(task.id)) return;
    const controller = new AbortController();
    // A state store that fails under execute (its claim or its last write) leaves the row as it was, its
    // lease to run out and the sweep to take it over: logged here, never an unhandled rejection.
    const done = this.execute(task, controller, task.status !== 'NEW' || task.attempts > 0)
      .catch((err: unknown) => this.log(`task ${task.id} (${task.kind}): the state store failed: ${describeError(err)}`))
      .finally(() => this.running.delete(task.id));
    this.running.set(task.id, { controller, done });
  }

  async submit(spec: SubmitSpec): Promise<Row<'tasks'>> {
    const t = await this.create(spec);
    this.start(t);
    return t;
  }

  /** Waits for a task started in this process (tests, CLI). */
  async settled(id: string): Promise<Row<'tasks'> | undefined> {
    await this.running.get(id)?.done;
    return this.store.get('tasks', id);
  }

  isRunningHere(id: string): boolean {
    return this.running.has(id);
  }

  private async execute(task: Row<'tasks'>, controller: AbortController, resumed: boolean): Promise<void> {
    const handler = this.handlers.get(task.kind);
    if (!handler) {
      await this.fail(task, `unknown task kind ${task.kind}`, this.owner);
      return;
    }
    const claimed = await this.store.update('tasks', task.id, { status: 'RUNNING', attempts: task.attempts + 1, updated: now(), heartbeat: now(), lease_until: this.leaseEnd() }, { status: ['NEW', 'RUNNING'], owner: this.owner });
    if (!claimed) return;
    const current = (await this.store.get('tasks', task.id)) ?? task;
    const about = this.about(current);
    const deadline = current.deadline ? Date.parse(current.deadline) : Infinity;
    const remaining = deadline - Date.now();
    const timer = Number.isFinite(remaining) ? setTimeout(() => controller.abort(new Error(`timed out: the task did not finish by its deadline ${current.deadline}`)), Math.max(0, remaining)) : undefined;
    const ctx: TaskContext<never> = {
      task: current,
      params: JSON.parse(current.params) as never,
      signal: controller.signal,
      resumed,
      step: async (name) => {
        if (!(await this.store.update('tasks', task.id, { step: name, heartbeat: now(), updated: now(), lease_until: this.leaseEnd() }, { status: 'RUNNING', owner: this.owner }))) this.lost(task.id, controller);
      },
      heartbeat: async () => {
        if (!(await this.store.update('tasks', task.id, { heartbeat: now(), lease_until: this.leaseEnd() }, { status: 'RUNNING', owner: this.owner }))) this.lost(task.id, controller);
      },
    };
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      const work = handler.run(ctx);
      const tracked = work.catch(() => undefined).finally(() => this.settling.delete(tracked));
      this.settling.add(tracked);
      await raceAbort(work, controller.signal);
      if (await this.store.update('tasks', task.id, { status: 'COMPLETED', step: 'done', updated: now(), error: null, lease_until: null }, { status: 'RUNNING', owner: this.owner })) {
        await this.logEnd(current, 'completed', null, about);
        this.finished(current, 'completed');
      }
    } catch (err) {
      if (controller.signal.aborted && controller.signal.reason instanceof StopError) {
        this.log(`task ${task.id} (${task.kind}) left RUNNING at shutdown; another process (or the next start) takes it over`);
        return;
      }
      if (err instanceof LeaseLostError || (controller.signal.aborted && controller.signal.reason instanceof LeaseLostError)) {
        this.log(`task ${task.id} (${task.kind}): lease lost, another process took it over; stopped here`);
        return;
      }
      const reason = controller.signal.aborted ? describeError(controller.signal.reason) : describeError(err);
      await this.fail(current, reason, this.owner, about);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Aborts a task of this process whose row says another owns it now. */
  private lost(id: string, controller: AbortController): never {
    const e = new LeaseLostError(id);
    controller.abort(e);
    throw e;
  }

  /** Marks the task FAILED and runs its cleanup, once: only the caller whose compare-and-set wins (owner: expected owner, or any). */
  private async fail(task: Row<'tasks'>, reason: string, owner?: string, about?: Promise<string>): Promise<void> {
    const changed = await this.store.update('tasks', task.id, { status: 'FAILED', error: reason, updated: now(), lease_until: null }, { status: ['NEW', 'RUNNING'], ...(owner !== undefined ? { owner } : {}) });
    if (!changed) return;
    await this.logEnd(task, 'failed', reason, about ?? this.about(task));
    this.finished(task, 'failed');
    const handler = this.handlers.get(task.kind);
    try {
      await handler?.failed(task, reason);
    } catch (err) {
      this.log(`task ${task.id}: cleanup after failure: ${describeError(err)}`);
    }
  }

  /**
   * At start: takes over the unfinished tasks whose lease ran out (all of them when exclusive): resumable
   * ones run again here (unless past their deadline), the others are FAILED with the reason. Then the
   * periodic sweep and the lease renewal start.
   */
  async recover(): Promise<{ resumed: string[]; failed: string[] }> {
    const r = await this.takeOver(this.exclusive);
    this.startWatchdog();
    return r;
  }

  private async takeOver(everything: boolean): Promise<{ resumed: string[]; failed: string[] }> {
    const resumed: string[] = [];
    const failed: string[] = [];
    // Exclusive start: no other process can hold a lease, so every lease counts as run out.
    const at = everything ? '9999-12-31T23:59:59.999Z' : now();
    for (;;) {
      if (this.stopped) break;
      const batch = await this.store.claimTasks(this.owner, at, this.leaseEnd(), [...this.handlers.keys()], 50);
      for (const t of batch) {
        if (this.running.has(t.id)) continue; // ours already (a renewal came late)
        const handler = this.handlers.get(t.kind);
        const expired = t.deadline !== null && Date.parse(t.deadline) < Date.now();
        const from = t.owner && t.owner !== this.owner ? ` (from ${t.owner})` : '';
        if (handler?.resumable && !expired) {
          resumed.push(t.id);
          this.log(`task ${t.id} (${t.kind}) interrupted at step ${t.step ?? 'start'}: resuming${from}`);
          this.start({ ...t, owner: this.owner });
        } else {
          failed.push(t.id);
          const why = expired
            ? `timed out: the task did not finish by its deadline ${t.deadline} (the control plane was down)`
            : `interrupted: the control plane stopped while the task was ${t.status === 'NEW' ? 'queued' : `at step ${t.step ?? 'start'}`}; a ${t.kind} task cannot be resumed`;
          await this.fail(t, why, this.owner);
        }
      }
      if (batch.length < 50) break;
    }
    return { resumed, failed };
  }

  startWatchdog(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = this.sweep().catch((err: unknown) => this.log(`watchdog: ${describeError(err)}`)).finally(() => (this.sweeping = null));
    }, this.options.watchdogMs ?? 5000);
    this.timer.unref();
    this.renewTimer = setInterval(() => void this.renew().catch((err: unknown) => this.log(`task leases: ${describeError(err)}`)), this.options.renewMs ?? Math.max(50, Math.floor(this.leaseMs / 3)));
    this.renewTimer.unref();
  }

  /** Renews the lease of every task running here; a task whose row names another owner now is stopped. */
  async renew(): Promise<void> {
    const mine = [...this.running].filter(([, r]) => !r.controller.signal.aborted);
    // One statement per renewal, however many tasks run here.
    const held = new Set(await this.store.renewTasks(this.owner, mine.map(([id]) => id), this.leaseEnd()));
    for (const [id, r] of mine) {
      if (!held.has(id) && this.running.get(id) === r) r.controller.abort(new LeaseLostError(id));
    }
  }

  /**
   * Takes over the tasks whose lease ran out: a dead peer's tasks are resumed or failed here while this
   * process runs. (This process's own tasks time out by the timer each run sets.)
   */
  async sweep(): Promise<void> {
    const r = await this.takeOver(false);
    if (r.resumed.length || r.failed.length) this.log(`tasks whose process stopped renewing their lease: ${r.resumed.length} resumed here, ${r.failed.length} failed`);
  }

  /** Expires one task now if it is past its deadline; true when it is (or already was) finished. */
  async expireIfOverdue(id: string): Promise<boolean> {
    const task = await this.store.get('tasks', id);
    if (!task || task.status === 'COMPLETED' || task.status === 'FAILED') return true;
    if (task.deadline !== null && task.deadline < now()) {
      const here = this.running.get(id);
      if (here) {
        here.controller.abort(new Error(`timed out: the task did not finish by its deadline ${task.deadline}`));
        await here.done;
      } else await this.fail(task, `timed out: the task did not finish by its deadline ${task.deadline}`);
      return true;
    }
    return false;
  }

  /**
   * Stops the sweep and abandons running tasks, left RUNNING with their lease released so that another
   * process (or the next start) takes them over at once instead of after the lease.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.renewTimer) clearInterval(this.renewTimer);
    await this.sweeping;
    const ids = [...this.running.keys()];
    const all = [...this.running.values()];
    for (const r of all) r.controller.abort(new StopError());
    await Promise.allSettled(all.map((r) => r.done));
    // Give abandoned handlers a moment to finish their current call, so none writes after the store closes.
    await Promise.race([Promise.allSettled([...this.settling]), new Promise((r) => setTimeout(r, 3000))]);
    for (const id of ids) {
      await this.store.update('tasks', id, { lease_until: null }, { owner: this.owner, status: ['NEW', 'RUNNING'] }).catch((err: unknown) => this.log(`task ${id}: releasing its lease: ${describeError(err)}`));
    }
  }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}
