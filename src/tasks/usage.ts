// Volume use and replica replication state for /metrics (src/api/operations.ts), read from the agents by
// the health monitor (./health.ts) each round, as the archiving status is (./archive.ts). A scrape reads
// this cache and never waits for an agent.
import type { ReplicationStatus } from '../agent/protocol.js';
import type { Row } from '../state/index.js';
import { withTimeout } from '../util/concurrency.js';
import type { ControlPlane } from './control.js';
import { replicationAgent } from './replication.js';

export interface UsageReading {
  /** Date.now() of the reading. */
  at: number;
  /** Bytes used on the volume; null when the agent did not say in time. */
  volumeUsed: number | null;
  /** Replicas only: the agent's replication status; null when it did not answer in time (or is down). */
  replication?: ReplicationStatus | null;
}

/** How long an agent's answer to the health monitor counts as current: three rounds, at least 15 s. */
export const READING_MAX_AGE = (plane: ControlPlane): number => Math.max(15_000, 3 * plane.health.intervalMs);

const readings = new WeakMap<ControlPlane, Map<string, UsageReading>>();
/** Instances whose reading is under way: a slow agent is not asked again every round. */
const pending = new WeakMap<ControlPlane, Set<string>>();

function cache(plane: ControlPlane): Map<string, UsageReading> {
  let m = readings.get(plane);
  if (!m) readings.set(plane, (m = new Map()));
  return m;
}

/**
 * The readings still fresh, by instance id. Older than the health lease (three rounds, at least 15 s) a
 * reading is dropped rather than shown as current: this process is not the health leader (any more), or the
 * instance is held by a task and not checked.
 */
export function usageReadings(plane: ControlPlane): Map<string, UsageReading> {
  const maxAge = READING_MAX_AGE(plane);
  const t = Date.now();
  const out = new Map<string, UsageReading>();
  for (const [id, r] of cache(plane)) {
    if (t - r.at <= maxAge) out.set(id, r);
    else cache(plane).delete(id);
  }
  return out;
}

/** Read by the health monitor each round for an instance whose CouchDB runs; errors count as no answer. */
export async function refreshUsage(plane: ControlPlane, inst: Row<'instances'>): Promise<void> {
  let busy = pending.get(plane);
  if (!busy) pending.set(plane, (busy = new Set()));
  if (busy.has(inst.id)) return;
  busy.add(inst.id);
  try {
    const [volumeUsed, replication] = await Promise.all([
      plane.volumeUsed(inst),
      inst.replica_of === null
        ? undefined
        : // The same bound as show's replication field: a primary that does not answer can take the agent 10 s.
          replicationAgent(plane, inst).then((a) => withTimeout(a.replicationStatus(), 5000)).catch(() => null),
    ]);
    cache(plane).set(inst.id, { at: Date.now(), volumeUsed, ...(replication === undefined ? {} : { replication }) });
  } finally {
    busy.delete(inst.id);
  }
}

/** The health check found the agent or its CouchDB down: nothing is known, and a replica does not follow. */
export function usageUnknown(plane: ControlPlane, inst: Row<'instances'>): void {
  cache(plane).set(inst.id, { at: Date.now(), volumeUsed: null, ...(inst.replica_of === null ? {} : { replication: null }) });
}

/** A replica follows when its agent says so: every followed database's job running, and no errors. */
export function replicationUp(s: ReplicationStatus | null | undefined): boolean {
  return !!s && s.role === 'replica' && s.errors.length === 0 && s.databases.every((d) => d.state === 'running');
}
