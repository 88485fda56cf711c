// Instance status from the agents' own answers. Every health_interval seconds each idle instance's agent
// is asked how its CouchDB is: a CouchDB that is down makes the instance SHUTDOWN, an agent that does not
// answer makes it ERROR, each with the reason in `fault`; a dead agent is started again, whatever the fault
// says. When both answer again the instance is ACTIVE again. Instances held by a task are left to that task.
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

export class HealthMonitor {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  readonly #restarting = new Set<string>();
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
      // A container that died says why, and stays down until the instance is restarted.
      const down = await this.plane.compute.diagnose?.(inst).catch(() => null);
      if (down) {
        if (theirs && inst.status !== 'ACTIVE') return;
        next = { status: 'ERROR', fault: `${HEALTH_FAULT}${down}` };
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
