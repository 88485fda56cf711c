// Compute drivers place instances: where each CouchDB runs, its agent, its volume. The control plane
// talks to CouchDB only through the instance's agent (AgentApi).
import * as path from 'node:path';
import type { AgentApi } from '../agent/protocol.js';
import type { Row } from '../state/index.js';
import { withTimeout } from '../util/concurrency.js';

export interface EngineInfo {
  kind: 'couchdb' | 'devengine';
  /** Release directory with bin/couchdb. */
  home: string;
  /** Said at start and in every instance's show when instances do not run on Apache CouchDB. */
  warning?: string;
}

/** Where a provisioned instance lives; stored in the instance row. */
export interface Placement {
  host: string;
  port: number;
  agentPort: number;
  epmdPort: number;
  /** A cluster member's fixed Erlang distribution port; absent for a single instance. */
  distPort?: number;
  agentPid: number | null;
  instanceDir: string;
  engine: EngineInfo['kind'];
}

/** Where an instance's files are, as its agent sees them. */
export interface InstancePaths {
  dataDir: string;
  agentDir: string;
  /** The OS identity CouchDB runs as (local isolated instances). */
  runAs?: { uid: number; gid: number };
  /** Where CouchDB listens, as the agent sees it (default: the instance's host). Containers: 0.0.0.0, published. */
  bindAddress?: string;
  /** The release directory, as the agent sees it (a container's own), over the datastore version's. */
  couchdbHome?: string;
  /** The instance's own backup key file, as the agent sees it (a container's copy); absent: the host's file. */
  keyFile?: string;
  /** A cluster member's copy of its cluster's secrets (a container's, root's 0400); absent: the control plane's file. */
  clusterSecretsFile?: string;
}

/**
 * A cluster's secrets on the control plane's host (0600 JSON: the Erlang cookie, [chttpd_auth] secret and
 * uuid; tasks/clusters.ts writes it), which container drivers copy into each member.
 */
export function clusterSecretsFile(stateDir: string, clusterId: string): string {
  if (!/^[0-9a-f-]{36}$/.test(clusterId)) throw new Error(`invalid cluster id ${JSON.stringify(clusterId)}`);
  return path.join(stateDir, 'clusters', clusterId, 'secrets.json');
}

/** The Erlang distribution port every containerised cluster member listens on (on its cluster's network only). */
export const CONTAINER_DIST_PORT = 9100;

export interface ComputeDriver {
  readonly name: string;
  /** The engine instances get when their datastore version names no release directory. */
  readonly engine: EngineInfo;
  /** True when instances run the CouchDB of an image whatever a datastore version's release directory says (no upgrade by version). */
  readonly imageReleases?: boolean;
  /** Set when tenants are not isolated from the host (instance_isolation = none as root): shown in show and /health. */
  readonly isolationWarning?: string;
  /**
   * Allocates the instance's ports, volume and agent and starts the agent; reuses what the row already records.
   * `readOnly`: other repositories (another instance's part, see repositoryFor) the agent reads a backup
   * from to prepare; a container sees them until endRestore.
   */
  provision(instance: Row<'instances'>, options?: { readOnly?: string[] }): Promise<Placement>;
  /** Takes away what provision lent for a restore (readOnly); absent: nothing was lent. */
  endRestore?(instance: Row<'instances'>): Promise<void>;
  /**
   * The part of `repository` the instance's agent writes its backups and archive to, and all of the
   * repository it can reach (containers: <repo>/instances/<id> of a file:// repository). Absent: all of it.
   */
  repositoryFor?(instanceId: string, repository: string): string;
  /** Every such part that exists (archive retention of deleted instances scans them). */
  repositoryParts?(repository: string): string[];
  /** Restarts the agent process of a provisioned instance if it is not running (after a server restart). */
  ensureAgent(instance: Row<'instances'>): Promise<Placement>;
  /** Client for the instance's agent. */
  agent(instance: Row<'instances'>): Promise<AgentApi>;
  /** Where the volume is mounted (CouchDB's data directory), the agent's own directory, and the OS identity CouchDB runs as. */
  paths(instance: Row<'instances'>): InstancePaths;
  /** Grows the volume; the quota is the agent's to enforce. */
  resizeVolume(instance: Row<'instances'>, sizeGb: number): Promise<void>;
  /** Stops the agent and CouchDB and removes the instance's directory and volume. Idempotent. */
  destroy(instance: Row<'instances'>): Promise<void>;
  /** Applies a new flavor's RAM and vCPUs to a running instance (containers' limits); absent: nothing to apply. */
  resizeFlavor?(instance: Row<'instances'>, flavor: { ram: number; vcpus: number }): Promise<void>;
  /** Why the instance's machinery is down (a container that exited, and how), or null when it runs; absent: not known. */
  diagnose?(instance: Row<'instances'>): Promise<string | null>;
  /**
   * Gives the agent another instance's backup key for one restore (a new instance from another's backup),
   * returning the path it reads it at; removeRestoreKey takes it away again. keyId undefined is the master
   * key (a backup written before per-instance keys). Absent: the agent reads the host's file.
   */
  /** Makes sure the agent has the instance's own key at paths().keyFile (a container made before it had one). */
  ensureOwnKey?(instance: Row<'instances'>): Promise<void>;
  installRestoreKey?(instance: Row<'instances'>, hostFile: string, keyId: string | undefined): Promise<string>;
  removeRestoreKey?(instance: Row<'instances'>): Promise<void>;
  /**
   * Puts `follower` on a network between it and `source` (containers: see docs/compute.md, "Replicas") and
   * answers the URL at which the follower's CouchDB and agent reach the source's CouchDB there. Idempotent.
   * Absent: the source's couchdb_url (local processes share the host).
   */
  linkReplica?(source: Row<'instances'>, follower: Row<'instances'>): Promise<string>;
  /**
   * `follower` no longer follows the instance `sourceId` (detach, promote, eject, delete): takes it off that
   * network, which goes with the source's last follower. Idempotent; the source may be gone.
   */
  unlinkReplica?(sourceId: string, follower: Row<'instances'>): Promise<void>;
  /**
   * A cluster member's Erlang node name when members are containers (docs/cluster.md, "On containers"): a name
   * the other members resolve on the cluster's network, the same across restarts and re-creation. Members then
   * run no epmd and listen for their peers on CONTAINER_DIST_PORT. Absent: local processes
   * (couchdb-<id>@127.0.0.1, the cluster's epmd on loopback).
   */
  clusterNode?(instance: Pick<Row<'instances'>, 'id'>): string;
  /** Removes what a cluster's members shared (its network) once they are all gone. Idempotent. */
  destroyCluster?(clusterId: string): Promise<void>;
  /** Pids of processes this driver started that still run (tests check nothing is left). */
  livePids(instance: Row<'instances'>): number[];
}

export const GiB = 1024 ** 3;

/** True when the instance's agent answers a status call within ms; any failure (no token, refused, slow) is "no". */
export async function agentAnswers(agent: () => Promise<AgentApi>, ms = 2000): Promise<boolean> {
  try {
    await withTimeout((await agent()).status(), ms);
    return true;
  } catch {
    return false;
  }
}
