// Instance status from the agents' own answers. Every health_interval seconds each idle instance's agent
// is asked how its CouchDB is: a CouchDB that is down makes the instance SHUTDOWN, an agent that does not
// answer makes it ERROR, each with the reason in `fault`; a dead agent is started again, whatever the fault
// says, and so is a container or Swarm task that ended, with a back-off (1, 2, 4 … 60 s) and the count and
// last reason in `fault` while it keeps dying, so that a restart loop shows. When both answer again the instance is ACTIVE again. Instances held by a task are left to that task.
// A fault a task left is kept: an ERROR or SHUTDOWN a task's end left (release(): the agent's state then,
// a backup whose agent was killed, say) follows the agent again, returning to ACTIVE with the task's own
// reason once it answers RUNNING; only a failed create or delete (VERDICT_FAULTS) stays ERROR here.
// With several control-plane processes only the holder of the `health` leader lease checks (./leader.ts).
import type { Row, InstanceStatus } from '../state/index.js';
import { now } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { taskPart, VERDICT_FAULTS } from './control.js';
import { LeaderLease } from './leader.js';
import { mapLimit, withTimeout } from '../util/concurrency.js';
import { refreshArchive } from './archive.js';
import { refreshUsage, usageUnknown } from './usage.js';

/** When each instance's agent last answered this process (ms): eject names it for a source that hangs. */
const seen = new WeakMap<ControlPlane, Map<string, number>>();
export function lastSeen(plane: ControlPlane): Map<string, number> {
  let m = seen.get(plane);
  if (!m) seen.set(plane, (m = new Map()));
  return m;
}

/** Every fault the monitor writes starts with this; only such faults are cleared by it. */
export const HEALTH_FAULT = 'health check: ';
const WATCHED: InstanceStatus[] = ['ACTIVE', 'RESTART_REQUIRED', 'SHUTDOWN', 'ERROR'];
/** Agents asked at once in a round. */
const HEALTH_CONCURRENCY = 64;
/** Back-off between starts of a container that keeps ending, and how long it must run to be forgiven. */
const BACKOFF_MAX_MS = 60_000;
const BACKOFF_RESET_MS = 60_000;

interface Restarts {
  count: number;
  since: number;
  nextAt: number;
  /** When the agent was first seen answering again after the last start. */
  okSince: number | null;
}

export class HealthMonitor {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  readonly #restarting = new Set<string>();
  readonly #restarts = new Map<string, Restarts>();
  /** One process checks at a time; the lease outlives three rounds so a slow round does not lose it. */
  readonly leader: LeaderLease;

  constructor(
    private readonly plane: ControlPlane,
    readonly intervalMs: number,
    private readonly log: (m: string) => void,
  ) {
    this.leader = new LeaderLease(plane.store, 'health', plane.tasks.owner, Math.max(15_000, 3 * intervalMs));
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      if (this.#running) return;
      this.#running = this.checkAll()
        .catch((err: unknown) => this.log(`health check: ${describeError(err)}`))
        .finally(() => (this.#running = null));
    }, this.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running;
    await this.leader.release();
  }

  async checkAll(): Promise<void> {
    if (!(await this.leader.hold())) return;
    const rows = await this.plane.store.find('instances', { status: WATCHED });
    // Bounded, so that a large fleet is not asked all at once from one process (the leader).
    await mapLimit(rows.filter((i) => i.task_id === null && i.agent_port !== null), HEALTH_CONCURRENCY, (i) => this.check(i));
    // The restart counts of instances that are gone (deleted) go with them.
    for (const id of this.#restarts.keys()) if (!rows.some((r) => r.id === id) && !(await this.plane.store.get('instances', id))) this.#restarts.delete(id);
  }

  /** One instance: ask its agent, write what it says (compare-and-set on the status read). */
  async check(inst: Row<'instances'>): Promise<void> {
    const ours = inst.fault?.startsWith(HEALTH_FAULT) ?? false;
    // A task's fault: kept, never replaced by ours while the agent is merely being started again.
    const theirs = !ours && inst.fault !== null;
    // A failed create or delete is the task's verdict on the instance: its agent is still started again.
    const verdict = theirs && inst.status === 'ERROR' && VERDICT_FAULTS.some((f) => inst.fault!.startsWith(f));
    let next: { status: InstanceStatus; fault: string | null };
    try {
      const s = await withTimeout((await this.plane.compute.agent(inst)).status(), 3000);
      lastSeen(this.plane).set(inst.id, Date.now());
      this.#answered(inst.id);
      if (verdict) return;
      if (s.state === 'RUNNING' || s.state === 'RESTART_REQUIRED') {
        // Archiving status for show, the listing's window and /metrics (the agent runs the loop itself);
        // volume use and a replica's replication state for /metrics. Not awaited: a slow answer does not
        // hold the status write.
        void refreshArchive(this.plane, inst);
        void refreshUsage(this.plane, inst);
        // RESTART_REQUIRED the control plane set (configuration detached) stays until a restart.
        next = { status: s.state === 'RESTART_REQUIRED' || inst.status === 'RESTART_REQUIRED' ? 'RESTART_REQUIRED' : 'ACTIVE', fault: ours ? null : taskPart(inst.fault) };
        if (inst.status === 'RESTART_REQUIRED' && s.state === 'RUNNING' && !ours) return;
      } else {
        // The agent's supervisor restarts a CouchDB that died: a task's ERROR or SHUTDOWN (and its reason)
        // stays until CouchDB runs again.
        if (theirs && (inst.status === 'SHUTDOWN' || inst.status === 'ERROR')) return;
        next = { status: 'SHUTDOWN', fault: `${HEALTH_FAULT}CouchDB is not running: ${s.reason ?? s.state}` };
        usageUnknown(this.plane, inst);
      }
    } catch (err) {
      usageUnknown(this.plane, inst);
      // A container that ended says why, and is started again with a back-off; the count shows a loop.
      const down = await this.plane.compute.diagnose?.(inst).catch(() => null);
      if (down) {
        const loop = this.#startAgain(inst, down);
        if (theirs && inst.status !== 'ACTIVE') return;
        next = { status: 'ERROR', fault: `${HEALTH_FAULT}${down}${loop}` };
      } else {
        this.#restartAgent(inst);
        // Not answering is all a task's ERROR or SHUTDOWN can say now: the restart decides the rest.
        if (theirs && inst.status !== 'ACTIVE') return;
        next = { status: 'ERROR', fault: `${HEALTH_FAULT}the agent does not answer: ${describeError(err)}` };
      }
    }
    if (next.status === inst.status && next.fault === inst.fault) return;
    const changed = await this.plane.store.update('instances', inst.id, { status: next.status, fault: next.fault, updated: now() }, { task_id: null, status: inst.status });
    if (changed) this.log(`instance ${inst.id}: ${inst.status} -> ${next.status}${next.fault ? ` (${next.fault.startsWith(HEALTH_FAULT) ? next.fault.slice(HEALTH_FAULT.length) : next.fault})` : ''}`);
  }

  /** The agent answers: a container that has run long enough since its last start is forgiven its past. */
  #answered(id: string): void {
    const r = this.#restarts.get(id);
    if (!r) return;
    r.okSince ??= Date.now();
    if (Date.now() - r.okSince >= BACKOFF_RESET_MS) this.#restarts.delete(id);
  }

  /** Starts an ended container (or Swarm task) again once its back-off has passed; what the fault adds. */
  #startAgain(inst: Row<'instances'>, why: string): string {
    const t = Date.now();
    let r = this.#restarts.get(inst.id);
    if (!r) this.#restarts.set(inst.id, (r = { count: 0, since: t, nextAt: t, okSince: null }));
    r.okSince = null;
    if (t >= r.nextAt && !this.#restarting.has(inst.id)) {
      r.count++;
      r.nextAt = t + Math.min(BACKOFF_MAX_MS, 1000 * 2 ** (r.count - 1));
      this.log(`instance ${inst.id}: starting it again (start ${r.count} since ${new Date(r.since).toISOString()}): ${why}`);
      this.#restartAgent(inst);
    }
    return `; started again ${r.count} time${r.count === 1 ? '' : 's'} since ${new Date(r.since).toISOString()}, next no sooner than ${new Date(r.nextAt).toISOString()}`;
  }

  /** A dead agent is started again (it adopts or restarts its CouchDB); one attempt at a time per instance. */
  #restartAgent(inst: Row<'instances'>): void {
    if (this.#restarting.has(inst.id)) return;
    this.#restarting.add(inst.id);
    void this.plane.compute
      .ensureAgent(inst)
      .then(async (p) => {
        if (p.agentPid !== inst.agent_pid) await this.plane.store.update('instances', inst.id, { agent_pid: p.agentPid }, { task_id: null });
      })
      .catch((err: unknown) => this.log(`instance ${inst.id}: the agent could not be started again: ${describeError(err)}`))
      .finally(() => this.#restarting.delete(inst.id));
  }
}
