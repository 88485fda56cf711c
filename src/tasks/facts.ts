// What `show` of an instance tells beyond its row (issue 15): the CouchDB version and the settings
// waiting for a restart (from the agent's status), what the databases hold, the last backup and the
// flavor's name; while a task holds the instance, its kind and step and the agent's byte progress (a
// restore's, say). Every agent call is bounded: a slow agent leaves a field out, it never slows show down.
import type { AgentApi, AgentOpsApi, DataStats } from '../agent/protocol.js';
import type { Progress } from '../backup/index.js';
import type { Row } from '../state/index.js';
import type { ControlPlane } from './control.js';
import { withTimeout } from '../util/concurrency.js';

export interface InstanceFacts {
  version?: string;
  pendingRestart?: string[];
  data?: DataStats;
  lastBackup?: Row<'backups'>;
  flavorName?: string;
  /** The task holding the instance: its kind and the last step it recorded. */
  task?: { kind: string; step: string | null };
  progress?: Progress;
}

const LIVE = ['ACTIVE', 'RESTART_REQUIRED', 'BACKUP', 'RESIZE'];

/** The agent's operations API, when the agent has it (test fakes may not). */
export function opsOf(agent: unknown): Partial<AgentOpsApi> {
  return agent as Partial<AgentOpsApi>;
}

export async function instanceFacts(plane: ControlPlane, inst: Row<'instances'>): Promise<InstanceFacts> {
  const facts: InstanceFacts = {};
  const flavor = plane.store.get('flavors', inst.flavor_id).then((f) => {
    if (f) facts.flavorName = f.name;
  });
  const backup = plane.store.find('backups', { instance_id: inst.id, status: 'COMPLETED' }).then((rows) => {
    // Newest by completion time (updated), whatever the list order.
    const last = rows.sort((a, b) => (a.updated < b.updated ? 1 : a.updated > b.updated ? -1 : 0))[0];
    if (last) facts.lastBackup = last;
  });
  // One agent client for both reads below, made when the first needs it.
  let client: Promise<AgentApi | null> | undefined;
  const agentOf = (): Promise<AgentApi | null> => (client ??= inst.agent_port ? plane.compute.agent(inst).catch(() => null) : Promise.resolve(null));
  const agentFacts = (async () => {
    if (!LIVE.includes(inst.status)) return;
    const agent = await agentOf();
    if (!agent) return;
    const ops = opsOf(agent);
    await Promise.all([
      withTimeout(agent.status(), 2000).then((s) => {
        if (s.version) facts.version = s.version;
        if (s.pendingRestart?.length) facts.pendingRestart = s.pendingRestart;
      }, () => undefined),
      ops.dataStats ? withTimeout(ops.dataStats(), 3000).then((d) => (facts.data = d), () => undefined) : undefined,
    ]);
  })();
  const task = (async () => {
    if (!inst.task_id) return;
    const t = await plane.store.get('tasks', inst.task_id);
    if (t && (t.status === 'NEW' || t.status === 'RUNNING')) facts.task = { kind: t.kind, step: t.step };
    // The agent answers while it restores or backs up (its RPC server is not held by the work).
    const agent = await agentOf();
    const p = agent ? await withTimeout(agent.progress(), 1000).catch(() => null) : null;
    if (p) facts.progress = p;
  })();
  await Promise.all([flavor, backup, agentFacts, task]);
  return facts;
}
