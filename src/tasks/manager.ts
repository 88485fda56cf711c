// Durable tasks. A task is a row (tables.tasks) written before it runs; its handler records steps as it
// goes. When the server starts, every task left NEW or RUNNING by a crash or stop is resumed (handlers
// that are idempotent) or marked FAILED with the reason, and its handler's `failed` puts the instance or
// backup in a true state. A watchdog fails tasks past their deadline, so nothing stays BUILD or NEW.
import { randomUUID } from 'node:crypto';
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
  /** Watchdog period, ms. */
  watchdogMs?: number;
  log?: (message: string) => void;
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
  private stopped = false;
  private readonly log: (m: string) => void;
  private readonly finishedListeners = new Set<(e: TaskFinished) => void>();

  constructor(private readonly store: StateStore, private readonly options: TaskManagerOptions = {}) {
    this.log = options.log ?? (() => undefined);
  }

  /** Calls listener whenever a task ends here, COMPLETED or FAILED; returns the unsubscribe. */
  onFinished(listener: (e: TaskFinished) => void): () => void {
    this.finishedListeners.add(listener);
    return () => this.finishedListeners.delete(listener);
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
    const done = this.execute(task, controller, task.status !== 'NEW' || task.attempts > 0).finally(() => this.running.delete(task.id));
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
      await this.fail(task, `unknown task kind ${task.kind}`);
      return;
    }
    const claimed = await this.store.update('tasks', task.id, { status: 'RUNNING', attempts: task.attempts + 1, updated: now(), heartbeat: now() }, { status: ['NEW', 'RUNNING'] });
    if (!claimed) return;
    const current = (await this.store.get('tasks', task.id)) ?? task;
    const deadline = current.deadline ? Date.parse(current.deadline) : Infinity;
    const remaining = deadline - Date.now();
    const timer = Number.isFinite(remaining) ? setTimeout(() => controller.abort(new Error(`timed out: the task did not finish by its deadline ${current.deadline}`)), Math.max(0, remaining)) : undefined;
    const ctx: TaskContext<never> = {
      task: current,
      params: JSON.parse(current.params) as never,
      signal: controller.signal,
      resumed,
      step: async (name) => {
        await this.store.update('tasks', task.id, { step: name, heartbeat: now(), updated: now() }, { status: 'RUNNING' });
      },
      heartbeat: async () => {
        await this.store.update('tasks', task.id, { heartbeat: now() }, { status: 'RUNNING' });
      },
    };
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      const work = handler.run(ctx);
      const tracked = work.catch(() => undefined).finally(() => this.settling.delete(tracked));
      this.settling.add(tracked);
      await raceAbort(work, controller.signal);
      if (await this.store.update('tasks', task.id, { status: 'COMPLETED', step: 'done', updated: now(), error: null }, { status: 'RUNNING' })) this.finished(current, 'completed');
    } catch (err) {
      if (controller.signal.aborted && controller.signal.reason instanceof StopError) {
        this.log(`task ${task.id} (${task.kind}) left RUNNING at shutdown; it is recovered at the next start`);
        return;
      }
      const reason = controller.signal.aborted ? describeError(controller.signal.reason) : describeError(err);
      await this.fail(current, reason);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private async fail(task: Row<'tasks'>, reason: string): Promise<void> {
    const changed = await this.store.update('tasks', task.id, { status: 'FAILED', error: reason, updated: now() }, { status: ['NEW', 'RUNNING'] });
    if (!changed) return;
    this.log(`task ${task.id} (${task.kind}) FAILED: ${reason}`);
    this.finished(task, 'failed');
    const handler = this.handlers.get(task.kind);
    try {
      await handler?.failed(task, reason);
    } catch (err) {
      this.log(`task ${task.id}: cleanup after failure: ${describeError(err)}`);
    }
  }

  /**
   * At start: every task left NEW or RUNNING was interrupted. Resumable ones run again (unless past
   * their deadline); the others are FAILED with the reason. Then the watchdog starts.
   */
  async recover(): Promise<{ resumed: string[]; failed: string[] }> {
    const resumed: string[] = [];
    const failed: string[] = [];
    for (const t of await this.store.find('tasks', { status: ['NEW', 'RUNNING'] })) {
      if (this.running.has(t.id)) continue;
      const handler = this.handlers.get(t.kind);
      const expired = t.deadline !== null && Date.parse(t.deadline) < Date.now();
      if (handler?.resumable && !expired) {
        resumed.push(t.id);
        this.log(`task ${t.id} (${t.kind}) interrupted at step ${t.step ?? 'start'}: resuming`);
        this.start(t);
      } else {
        failed.push(t.id);
        const why = expired
          ? `timed out: the task did not finish by its deadline ${t.deadline} (the control plane was down)`
          : `interrupted: the control plane stopped while the task was ${t.status === 'NEW' ? 'queued' : `at step ${t.step ?? 'start'}`}; a ${t.kind} task cannot be resumed`;
        await this.fail(t, why);
      }
    }
    this.startWatchdog();
    return { resumed, failed };
  }

  startWatchdog(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => void this.sweep().catch((err: unknown) => this.log(`watchdog: ${describeError(err)}`)), this.options.watchdogMs ?? 5000);
    this.timer.unref();
  }

  /** Fails tasks past their deadline that are not running here (those time out by themselves). */
  async sweep(): Promise<void> {
    const t = now();
    for (const task of await this.store.find('tasks', { status: ['NEW', 'RUNNING'] })) {
      if (task.deadline !== null && task.deadline < t) {
        const here = this.running.get(task.id);
        if (here) here.controller.abort(new Error(`timed out: the task did not finish by its deadline ${task.deadline}`));
        else await this.fail(task, `timed out: the task did not finish by its deadline ${task.deadline}`);
      }
    }
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

  /** Stops the watchdog and abandons running tasks (left RUNNING for the next start's recover). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const all = [...this.running.values()];
    for (const r of all) r.controller.abort(new StopError());
    await Promise.allSettled(all.map((r) => r.done));
    // Give abandoned handlers a moment to finish their current call, so none writes after the store closes.
    await Promise.race([Promise.allSettled([...this.settling]), new Promise((r) => setTimeout(r, 3000))]);
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
