// The Docker compute driver (compute_driver = docker): every instance is one container of the guest
// image (image/Dockerfile) running `couchtrove agent entry` (the agent), with a named volume for its data. Docker
// Engine API through dockerode, never the CLI.
//
// - Container couchtrove-<id>, volume couchtrove-<id>-data, both labelled org.couchtrove.instance=<id>.
// - CouchDB and the agent listen in the container on the same port numbers they are published on, on
//   docker_publish_address: the agent's settings then need no translation, and couchdb_url is the host's.
// - Flavor RAM and vCPUs are the container's memory (no swap) and CPU limits; resizeFlavor updates the
//   running container (container.update), the data stays in the volume.
// - CouchDB runs as the image's unprivileged couchdb user (5984), started by the agent with runAs as an
//   isolated local instance is: it owns its data and nothing else. The agent is root in the container with
//   only the capabilities it needs (AGENT_CAPS, less those its parent keeps), no-new-privileges; so a tenant who gets
//   CouchDB to run code (root enable, then _config) reaches neither the agent's token, nor the backup key,
//   nor the mounted backup repository. Mounted: the instance's volume, and the file:// repository.
// - Secrets: the agent's bearer token and the backup key are copied into the created container with
//   putArchive (root, 0400) before its first start: not in its environment, command line or labels, so
//   `docker inspect` shows none. The host keeps its own copy of the token in <state_dir>/instances/<id>/
//   to talk to the agent.
// - The container has no restart policy of Docker's: one that dies shows so (diagnose), and the health
//   monitor starts it again (ensureAgent) with a back-off, the count in the instance's fault
//   (src/tasks/health.ts). Containers keep running while the control plane restarts.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type Docker from 'dockerode';
import type { AgentApi, AgentServeConfig } from '../../agent/protocol.js';
import type { Row } from '../../state/index.js';
import type { FlavorConfig, PortRange } from '../../config/server.js';
import { agentAnswers, clusterSecretsFile, CONTAINER_DIST_PORT, type ComputeDriver, type EngineInfo, type InstancePaths, type Placement } from '../driver.js';
import { defaultAgentFactory, freePort, type AgentFactory } from '../local.js';
import { connectDocker } from './connect.js';
import { packFiles, type MemoryFile } from './tar.js';
import type { InstanceKeys } from '../../crypto/instance-keys.js';

/** The guest image's unprivileged user (image/Dockerfile). */
export const GUEST_UID = 5984;
export const VOLUME_MOUNT = '/srv/couchtrove';
export const LABEL = 'org.couchtrove.instance';
export const AGENT_CONFIG = '/etc/couchtrove/agent.json';
const AGENT_TOKEN = '/etc/couchtrove/agent.token';
/** The instance's own backup key in its container (root, 0400); another instance's, lent for one restore. */
export const INSTANCE_KEY = '/etc/couchtrove/backup.key';
export const RESTORE_KEY = '/etc/couchtrove/restore.key';
/** A cluster member's copy of its cluster's secrets (the Erlang cookie among them; root, 0400). */
export const CLUSTER_SECRETS = '/etc/couchtrove/cluster.json';
/** A swift:// or s3:// repository's credentials (JSON of the storage driver's variables, root, 0400; src/storage/credentials.ts). */
export const STORAGE_CREDENTIALS = '/etc/couchtrove/storage.json';
const MiB = 1024 * 1024;
/**
 * The container's capabilities, and no more. The agent itself (`agent serve`) has DAC_OVERRIDE (read and
 * restore CouchDB's data directory), SETUID and SETGID (start CouchDB as its uid) and KILL (stop it). CHOWN,
 * FOWNER and SETPCAP are its parent's alone (`agent entry`, src/agent/entry.ts): it drops them from the agent's
 * bounding set and uses them only to give files inside the volume to uid 5984.
 */
export const AGENT_CAPS = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'SETUID', 'SETGID', 'KILL', 'SETPCAP'];

export interface DockerDriverOptions {
  stateDir: string;
  dockerHost?: string;
  /** The guest image (couchtrove image build). */
  image: string;
  /** Host address the ports are published on. */
  publishAddress: string;
  /** The backup repository URL: a file:// one is bind-mounted at the same path. */
  repository: string;
  /** The object store's variables for a swift:// or s3:// repository (STORAGE_CREDENTIALS); null or absent: none (file://). */
  storageCredentials?: Record<string, string> | null;
  /** Per-instance backup keys: each container gets its own instance's key only (INSTANCE_KEY), never the master. */
  instanceKeys?: InstanceKeys;
  /** Flavors by id: their RAM and vCPUs become the container's limits. */
  flavors: FlavorConfig[];
  tcpPorts?: PortRange[];
  usedPorts?: () => Promise<number[]>;
  agentFactory?: AgentFactory;
  /** How long a new container's agent may take to answer, ms. */
  agentStartMs?: number;
  log?: (line: string) => void;
}

interface Saved {
  port?: number;
  agentPort?: number;
  epmdPort?: number;
}

const isNotFound = (err: unknown): boolean => (err as { statusCode?: number }).statusCode === 404;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function containerName(id: string): string {
  return `couchtrove-${id}`;
}
export function volumeName(id: string): string {
  return `couchtrove-${id}-data`;
}
/** The network a source shares with its replicas (docker driver; the swarm driver uses the source's overlay). */
export function replicationNetwork(sourceId: string): string {
  return `couchtrove-${sourceId}-replication`;
}

/** The network a cluster's members share, and only they (docker: bridge, internal; swarm: overlay). */
export function clusterNetwork(clusterId: string): string {
  return `couchtrove-cluster-${clusterId}`;
}

/** A cluster member's name on its cluster's network (docker driver; see clusterNode). */
export function clusterAlias(id: string): string {
  return `${containerName(id)}.cluster`;
}

/** Container limits of a flavor: RAM without swap, vCPUs as CPU time. */
export const MEBIBYTE = MiB;

export function flavorLimits(f: { ram: number; vcpus: number }): { Memory: number; MemorySwap: number; NanoCpus: number } {
  return { Memory: f.ram * MiB, MemorySwap: f.ram * MiB, NanoCpus: f.vcpus * 1e9 };
}

/** The text of a multiplexed log stream (frames: stream byte, 3 zero bytes, big-endian length, payload). */
export function demux(buf: Buffer): string {
  const out: Buffer[] = [];
  for (let i = 0; i + 8 <= buf.length; ) {
    const n = buf.readUInt32BE(i + 4);
    out.push(buf.subarray(i + 8, i + 8 + n));
    i += 8 + n;
  }
  return Buffer.concat(out).toString('utf8');
}

export class DockerDriver implements ComputeDriver {
  readonly name: string = 'docker';
  readonly imageReleases = true;
  engine: EngineInfo = { kind: 'couchdb', home: '/opt/couchdb' };
  readonly docker: Docker;
  protected readonly factory: AgentFactory;
  protected readonly clients = new Map<string, Promise<AgentApi>>();
  protected readonly allocating = new Set<number>();

  constructor(protected readonly options: DockerDriverOptions) {
    this.docker = connectDocker(options.dockerHost);
    this.factory = options.agentFactory ?? defaultAgentFactory;
  }

  /** Checks the daemon and the image; learns the image's engine (its org.couchtrove.engine label). */
  async init(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new Error(`compute_driver = ${this.name}: the Docker daemon at ${this.options.dockerHost ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock'} does not answer: ${(err as Error).message}`);
    }
    let labels: Record<string, string> = {};
    try {
      labels = (await this.docker.getImage(this.options.image).inspect()).Config.Labels ?? {};
    } catch (err) {
      if (!isNotFound(err)) throw err;
      throw new Error(`compute_driver = ${this.name}: the guest image ${this.options.image} is not on the Docker host: build it with couchtrove image build (docs/compute.md)`);
    }
    this.engine = labels['org.couchtrove.engine'] === 'devengine'
      ? { kind: 'devengine', home: '/opt/couchtrove/devengine/release', warning: `the guest image ${this.options.image} carries the development engine (a CouchDB stand-in for development and tests), not Apache CouchDB` }
      : { kind: 'couchdb', home: '/opt/couchdb' };
  }

  protected repositoryDir(): string | null {
    const u = new URL(this.options.repository);
    return u.protocol === 'file:' ? decodeURIComponent(u.pathname) : null;
  }

  protected dir(id: string): string {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`invalid instance id ${JSON.stringify(id)}`);
    return path.join(this.options.stateDir, 'instances', id);
  }

  paths(inst?: Pick<Row<'instances'>, 'cluster_id'>): InstancePaths {
    return {
      dataDir: `${VOLUME_MOUNT}/data`, agentDir: `${VOLUME_MOUNT}/agent`, bindAddress: '0.0.0.0', couchdbHome: this.engine.home, runAs: { uid: GUEST_UID, gid: GUEST_UID },
      ...(this.options.instanceKeys ? { keyFile: INSTANCE_KEY } : {}),
      ...(inst?.cluster_id ? { clusterSecretsFile: CLUSTER_SECRETS } : {}),
    };
  }

  /**
   * A member's node is named after its alias on the cluster's network (couchtrove-<id>.cluster), which Docker's
   * DNS resolves for the other members there whatever address a restart or re-creation gives it. Erlang's long
   * names need a dot in the host part: a bare container name is refused as a peer's host.
   */
  clusterNode(inst: Pick<Row<'instances'>, 'id'>): string {
    return `couchdb@${clusterAlias(inst.id)}`;
  }

  /** A cluster member's copy of its cluster's secrets file, as a putArchive file (root, 0400); none for another instance. */
  protected clusterSecretFiles(inst: Row<'instances'>): MemoryFile[] {
    if (!inst.cluster_id) return [];
    return [{ name: CLUSTER_SECRETS.slice(1), content: fs.readFileSync(clusterSecretsFile(this.options.stateDir, inst.cluster_id)), uid: 0, gid: 0, mode: 0o400 }];
  }

  protected flavor(inst: Row<'instances'>): FlavorConfig {
    const f = this.options.flavors.find((x) => x.id === inst.flavor_id);
    if (!f) throw new Error(`flavor ${inst.flavor_id} of instance ${inst.id} is not configured`);
    return f;
  }

  protected async allocatePort(): Promise<number> {
    const used = new Set([...((await this.options.usedPorts?.()) ?? []), ...this.allocating]);
    const ranges = this.options.tcpPorts ?? [];
    const candidates = async function* (host: string): AsyncGenerator<number> {
      if (ranges.length === 0) for (let i = 0; i < 50; i++) yield await freePort(host);
      else for (const r of ranges) for (let p = r.from; p <= r.to; p++) yield p;
    };
    for await (const p of candidates(this.options.publishAddress)) {
      if (used.has(p)) continue;
      this.allocating.add(p);
      return p;
    }
    throw new Error('no free port left to publish');
  }

  /** The host side of an instance: its ports (placement.json) and the agent's token, 0600. */
  protected async hostSide(inst: Row<'instances'>): Promise<{ dir: string; port: number; agentPort: number; epmdPort: number; distPort?: number; token: string }> {
    const dir = this.dir(inst.id);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, 'placement.json');
    let saved: Saved = {};
    try {
      saved = JSON.parse(fs.readFileSync(file, 'utf8')) as Saved;
    } catch {
      // first provisioning
    }
    const port = inst.port ?? saved.port ?? (await this.allocatePort());
    const agentPort = inst.agent_port ?? saved.agentPort ?? (await this.allocatePort());
    // Erlang's port mapper stays inside the container: any number.
    const epmdPort = inst.epmd_port ?? saved.epmdPort ?? 4369;
    fs.writeFileSync(file, JSON.stringify({ port, agentPort, epmdPort }) + '\n', { mode: 0o600 });
    const tokenFile = path.join(dir, 'agent.token');
    if (!fs.existsSync(tokenFile)) fs.writeFileSync(tokenFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    // A cluster member's peers reach it on one port inside the cluster's network (never published): the same on every member.
    return { dir, port, agentPort, epmdPort, ...(inst.cluster_id ? { distPort: CONTAINER_DIST_PORT } : {}), token: fs.readFileSync(tokenFile, 'utf8').trim() };
  }

  /** The agent's serve configuration in the container. */
  protected serveConfig(agentPort: number, tokenFile = AGENT_TOKEN): AgentServeConfig {
    return {
      host: '0.0.0.0', port: agentPort, tokenFile, instanceDir: `${VOLUME_MOUNT}/agent`,
      ...(this.options.storageCredentials ? { storageCredentialsFile: STORAGE_CREDENTIALS } : {}),
    };
  }

  /** The repository's credentials file's content, or null for a repository without any (file://). */
  protected storageCredentialsText(): string | null {
    return this.options.storageCredentials ? JSON.stringify(this.options.storageCredentials) + '\n' : null;
  }

  /** What the agent in the container needs before its first start, as putArchive files. */
  protected secretFiles(agentPort: number, token: string, key: string | undefined): MemoryFile[] {
    const cfg = this.serveConfig(agentPort);
    const own = { uid: 0, gid: 0, mode: 0o400 };
    const files: MemoryFile[] = [
      { name: AGENT_CONFIG.slice(1), content: JSON.stringify(cfg, null, 2) + '\n', ...own },
      { name: AGENT_TOKEN.slice(1), content: `${token}\n`, ...own },
    ];
    if (key !== undefined) files.push({ name: INSTANCE_KEY.slice(1), content: key, ...own });
    const creds = this.storageCredentialsText();
    if (creds !== null) files.push({ name: STORAGE_CREDENTIALS.slice(1), content: creds, ...own });
    return files;
  }

  /**
   * A file:// repository is never mounted whole: each container gets its own instance's part,
   * <repo>/instances/<id>/ (created 0700), read-write, and for a restore another instance's part read-only
   * (readOnly, until endRestore). So a tenant who takes over its agent reaches no other tenant's objects.
   */
  repositoryFor(instanceId: string, repository: string): string {
    const dir = this.partDir(instanceId, repository);
    return dir ? `file://${dir}` : repository;
  }

  repositoryParts(repository: string): string[] {
    const repo = this.repositoryDir();
    if (!repo || repository !== this.options.repository) return [];
    let names: string[] = [];
    try {
      names = fs.readdirSync(path.join(repo, 'instances'));
    } catch {
      // no instance has written yet
    }
    return names.filter((n) => /^[0-9a-f-]{36}$/.test(n)).map((n) => `file://${path.join(repo, 'instances', n)}`);
  }

  /** The host directory of an instance's part of the file:// repository; null for other repositories. */
  protected partDir(instanceId: string, repository = this.options.repository): string | null {
    const repo = this.repositoryDir();
    if (!repo || repository !== this.options.repository) return null;
    if (!/^[0-9a-f-]{36}$/.test(instanceId)) throw new Error(`invalid instance id ${JSON.stringify(instanceId)}`);
    return path.join(repo, 'instances', instanceId);
  }

  /** Host directories of readOnly repositories: only other instances' parts of this repository are lent. */
  protected lentDirs(readOnly: string[] = []): string[] {
    const repo = this.repositoryDir();
    const out: string[] = [];
    for (const url of readOnly) {
      const u = new URL(url);
      const dir = u.protocol === 'file:' ? path.resolve(decodeURIComponent(u.pathname)) : null;
      if (!repo || !dir || path.dirname(dir) !== path.join(repo, 'instances') || !/^[0-9a-f-]{36}$/.test(path.basename(dir))) {
        throw new Error(`the repository ${url} cannot be lent to a container: only an instance's part of ${this.options.repository} (instances/<id>/) is`);
      }
      out.push(dir);
    }
    return out;
  }

  protected mounts(id: string, lent: string[] = []): Docker.MountConfig {
    const part = this.partDir(id);
    if (part) fs.mkdirSync(part, { recursive: true, mode: 0o700 });
    return [
      { Type: 'volume', Source: volumeName(id), Target: VOLUME_MOUNT },
      ...(part ? [{ Type: 'bind' as const, Source: part, Target: part }] : []),
      ...lent.filter((d) => d !== part).map((d) => ({ Type: 'bind' as const, Source: d, Target: d, ReadOnly: true })),
    ];
  }

  async provision(inst: Row<'instances'>, options: { readOnly?: string[] } = {}): Promise<Placement> {
    const h = await this.hostSide(inst);
    const lent = this.lentDirs(options.readOnly);
    const name = containerName(inst.id);
    const labels = { [LABEL]: inst.id, 'org.couchtrove.project': inst.project_id };
    try {
      await this.docker.getVolume(volumeName(inst.id)).inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.docker.createVolume({ Name: volumeName(inst.id), Labels: labels });
    }
    let container = this.docker.getContainer(name);
    let exists = true;
    try {
      await container.inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      exists = false;
    }
    if (!exists) container = await this.createContainer(inst, h, lent);
    const placement: Placement = {
      host: this.options.publishAddress, port: h.port, agentPort: h.agentPort, epmdPort: h.epmdPort, ...(h.distPort ? { distPort: h.distPort } : {}), agentPid: null, instanceDir: h.dir, engine: this.engine.kind,
    };
    return this.ensureAgent({ ...inst, host: placement.host, port: h.port, agent_port: h.agentPort, epmd_port: h.epmdPort, instance_dir: h.dir }, placement);
  }

  protected async createContainer(inst: Row<'instances'>, h: { port: number; agentPort: number; token: string }, lent: string[], flavor: { ram: number; vcpus: number } = this.flavor(inst)): Promise<Docker.Container> {
    const ports = [h.port, h.agentPort];
    const container = await this.docker.createContainer({
      name: containerName(inst.id),
      Image: this.options.image,
      Labels: { [LABEL]: inst.id, 'org.couchtrove.project': inst.project_id },
      User: '0:0',
      ExposedPorts: Object.fromEntries(ports.map((p) => [`${p}/tcp`, {}])),
      HostConfig: {
        PortBindings: Object.fromEntries(ports.map((p) => [`${p}/tcp`, [{ HostIp: this.options.publishAddress, HostPort: String(p) }]])),
        Mounts: this.mounts(inst.id, lent),
        ...flavorLimits(flavor),
        RestartPolicy: { Name: 'no' },
        CapDrop: ['ALL'],
        CapAdd: AGENT_CAPS,
        SecurityOpt: ['no-new-privileges'],
        // An init as pid 1 reaps what CouchDB leaves (its epmd, couchjs) when the agent is not their parent.
        Init: true,
        // Its own bridge network: no other container is on its link, so none reaches its ports directly.
        NetworkMode: await this.ensureNetwork(inst),
      },
    });
    await container.putArchive(packFiles([...this.secretFiles(h.agentPort, h.token, await this.options.instanceKeys?.text(inst.id)), ...this.clusterSecretFiles(inst)]), { path: '/' });
    // A cluster member also joins its cluster's network, before its first start (Erlang distribution, CouchDB's peers).
    if (inst.cluster_id) await this.docker.getNetwork(await this.ensureClusterNetwork(inst)).connect({ Container: containerName(inst.id), EndpointConfig: { Aliases: [clusterAlias(inst.id)] } });
    return container;
  }

  /**
   * A cluster's own bridge network, couchtrove-cluster-<cluster id>: internal (no gateway: nothing leaves
   * through it, the members' default route and published ports stay on their own networks), inter-container
   * traffic on, and only the cluster's members on it. Their Erlang distribution port (CONTAINER_DIST_PORT) is
   * never published: another member reaches it here and nowhere else reaches it from another container.
   */
  protected async ensureClusterNetwork(inst: Row<'instances'>): Promise<string> {
    const name = clusterNetwork(inst.cluster_id!);
    // Members are provisioned at once: one creation (Docker's duplicate check is not atomic).
    return this.serial(() => this.createClusterNetwork(inst, name));
  }

  /** Runs fn after every fn given before it has ended (this process's placement decisions, one at a time). */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** The kind of network a cluster's members share: a bridge on one host, an overlay across a swarm. */
  protected readonly clusterNetworkDriver: string = 'bridge';

  protected async createClusterNetwork(inst: Row<'instances'>, name: string): Promise<string> {
    await this.ensureNamedNetwork({
      Name: name, Driver: this.clusterNetworkDriver, Internal: true,
      Labels: { 'org.couchtrove.cluster': inst.cluster_id!, 'org.couchtrove.project': inst.project_id },
    });
    return name;
  }

  /** The network of that name, made if it is missing (one made meanwhile by another caller is taken: 409). */
  protected async ensureNamedNetwork(spec: Docker.NetworkCreateOptions): Promise<void> {
    try {
      await this.docker.getNetwork(spec.Name).inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.docker.createNetwork({ ...spec, CheckDuplicate: true }).catch((e: unknown) => {
        if ((e as { statusCode?: number }).statusCode !== 409) throw e;
      });
    }
  }

  /** The cluster's network, once its members are gone (anything still on it is taken off). */
  async destroyCluster(clusterId: string): Promise<void> {
    await this.removeNetworkForce(clusterNetwork(clusterId));
  }

  /**
   * One bridge network per instance (couchtrove-<id>, inter-container traffic off as well): containers of
   * two instances share no link, and Docker keeps its networks apart (its isolation rules; a host that does
   * not forward between bridges drops it anyway). Published ports go through the host's publish address.
   */
  protected async ensureNetwork(inst: Row<'instances'>): Promise<string> {
    const name = containerName(inst.id);
    await this.ensureNamedNetwork({
      Name: name, Driver: 'bridge',
      Labels: { [LABEL]: inst.id, 'org.couchtrove.project': inst.project_id },
      Options: { 'com.docker.network.bridge.enable_icc': 'false' },
    });
    return name;
  }

  /**
   * A replica reaches its source on a bridge network of that source's, couchtrove-<source>-replication,
   * which only the source and its followers join (docker network connect: live, neither restarts). Their
   * own networks keep inter-container traffic off, so they cannot serve; a network per source keeps other
   * instances, of this tenant or another, off it. Internal (no gateway): neither container's default route
   * or published ports change. Made with the first follower, removed with the last one (unlinkReplica) or
   * with the source (destroy). The URL names the source's container, which Docker's DNS resolves for the
   * containers on a network with it, whatever address a restart gives it.
   */
  async linkReplica(source: Row<'instances'>, follower: Row<'instances'>): Promise<string> {
    if (!source.port) throw new Error(`the source instance ${source.id} has no CouchDB port yet`);
    const name = replicationNetwork(source.id);
    await this.ensureNamedNetwork({
      Name: name, Driver: 'bridge', Internal: true,
      Labels: { [LABEL]: source.id, 'org.couchtrove.project': source.project_id, 'org.couchtrove.replication': 'true' },
    });
    for (const id of [source.id, follower.id]) {
      const info = await this.docker.getContainer(containerName(id)).inspect();
      if (!info.NetworkSettings.Networks[name]) await this.docker.getNetwork(name).connect({ Container: containerName(id) });
    }
    return `http://${containerName(source.id)}:${source.port}`;
  }

  /** Takes the follower off its source's replication network; the network goes once no follower is left on it. */
  async unlinkReplica(sourceId: string, follower: Row<'instances'>): Promise<void> {
    const net = this.docker.getNetwork(replicationNetwork(sourceId));
    const members = async (): Promise<string[] | null> => {
      try {
        return Object.values(((await net.inspect()) as { Containers?: Record<string, { Name: string }> }).Containers ?? {}).map((c) => c.Name);
      } catch (err) {
        if (isNotFound(err)) return null;
        throw err;
      }
    };
    const before = await members();
    if (before === null) return;
    if (before.includes(containerName(follower.id))) await net.disconnect({ Container: containerName(follower.id), Force: true });
    const left = await members();
    if (left !== null && left.every((n) => n === containerName(sourceId))) await this.removeReplicationNetwork(sourceId);
  }

  /** Removes a source's replication network, taking off whatever is still on it. */
  protected async removeReplicationNetwork(sourceId: string): Promise<void> {
    await this.removeNetworkForce(replicationNetwork(sourceId));
  }

  /** Removes a network, taking off whatever is still on it; gone already is fine. */
  private async removeNetworkForce(name: string): Promise<void> {
    const net = this.docker.getNetwork(name);
    try {
      const info = (await net.inspect()) as { Containers?: Record<string, { Name: string }> };
      for (const id of Object.keys(info.Containers ?? {})) await net.disconnect({ Container: id, Force: true }).catch(() => undefined);
      await net.remove();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /**
   * After a restore from another instance's part: the container is made again without that mount (mounts
   * are fixed at creation), on the same volume, so nothing lent stays reachable. CouchDB is not running yet.
   */
  async endRestore(inst: Row<'instances'>): Promise<void> {
    const info = await this.docker.getContainer(containerName(inst.id)).inspect();
    if (info.Mounts.some((m) => m.Type === 'bind' && m.RW === false)) await this.recreate(inst, this.flavor(inst));
  }

  /**
   * The container made again (stopped, removed, created with `flavor`'s limits and no lent mount, on the
   * same volume and ports, joined again to the replication networks the old one was on); its agent answers.
   */
  protected async recreate(inst: Row<'instances'>, flavor: { ram: number; vcpus: number }): Promise<void> {
    const c = this.docker.getContainer(containerName(inst.id));
    const info = await c.inspect();
    // The cluster's network is joined again by createContainer.
    const joined = Object.keys(info.NetworkSettings.Networks).filter((n) => n !== info.HostConfig.NetworkMode && !(inst.cluster_id && n === clusterNetwork(inst.cluster_id)));
    await c.stop({ t: 30 }).catch(() => undefined);
    await c.remove({ force: true, v: false });
    this.clients.delete(inst.id);
    await this.createContainer(inst, await this.hostSide(inst), [], flavor);
    for (const n of joined) await this.docker.getNetwork(n).connect({ Container: containerName(inst.id) });
    await this.ensureAgent(inst);
  }

  /** Why the container is not running (its state, exit code, OOM kill, error), or null when it runs. */
  async diagnose(inst: Row<'instances'>): Promise<string | null> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(containerName(inst.id)).inspect();
    } catch (err) {
      if (isNotFound(err)) return `container ${containerName(inst.id)} is gone`;
      return `the Docker daemon does not answer: ${(err as Error).message}`;
    }
    const s = info.State;
    if (s.Running && !s.Paused && !s.Restarting) return null;
    const parts = [`container ${containerName(inst.id)} is ${s.Status}`];
    if (!s.Running) parts.push(`exit code ${s.ExitCode}`);
    if (s.OOMKilled) parts.push('killed for lack of memory (OOM)');
    if (s.Error) parts.push(s.Error);
    if (s.FinishedAt && !s.FinishedAt.startsWith('0001')) parts.push(`at ${s.FinishedAt}`);
    return parts.join(', ');
  }

  async ensureAgent(inst: Row<'instances'>, placement?: Placement): Promise<Placement> {
    const p: Placement = placement ?? {
      host: inst.host ?? this.options.publishAddress, port: inst.port ?? 0, agentPort: inst.agent_port ?? 0, epmdPort: inst.epmd_port ?? 0,
      agentPid: null, instanceDir: inst.instance_dir ?? this.dir(inst.id), engine: this.engine.kind,
    };
    const c = this.docker.getContainer(containerName(inst.id));
    const info = await c.inspect();
    if (!info.State.Running) {
      await c.start();
      this.clients.delete(inst.id);
    } else if (await this.answers(inst)) {
      return p;
    }
    const limit = this.options.agentStartMs ?? 60_000;
    const until = Date.now() + limit;
    const probe = { ...inst, host: p.host, agent_port: p.agentPort, instance_dir: p.instanceDir };
    while (Date.now() < until) {
      if (await this.answers(probe)) return p;
      const why = await this.diagnose(inst);
      if (why) throw new Error(`the agent of instance ${inst.id} did not start: ${why}${await this.logTail(inst.id)}`);
      await sleep(200);
    }
    throw new Error(`the agent of instance ${inst.id} did not answer within ${limit / 1000} s${await this.logTail(inst.id)}`);
  }

  /** The container's last log lines, for error messages. */
  protected async logTail(id: string): Promise<string> {
    try {
      const buf = (await this.docker.getContainer(containerName(id)).logs({ stdout: true, stderr: true, tail: 5 })) as unknown as Buffer;
      const text = demux(buf).trim();
      return text ? `; its log ends: ${text.slice(-600)}` : '';
    } catch {
      return '';
    }
  }

  protected async answers(inst: Row<'instances'>): Promise<boolean> {
    if (!inst.agent_port) return false;
    if (await agentAnswers(() => this.agent(inst))) return true;
    this.clients.delete(inst.id);
    return false;
  }

  async agent(inst: Row<'instances'>): Promise<AgentApi> {
    let c = this.clients.get(inst.id);
    if (!c) {
      const token = fs.readFileSync(path.join(inst.instance_dir ?? this.dir(inst.id), 'agent.token'), 'utf8').trim();
      const host = inst.host ?? this.options.publishAddress;
      c = Promise.resolve(this.factory(`http://${host.includes(':') ? `[${host}]` : host}:${inst.agent_port}`, token));
      this.clients.set(inst.id, c);
    }
    return c;
  }

  /**
   * Another instance's key for one restore, copied in as root's 0400 file and removed after. The master key
   * (a backup written before per-instance keys) is never copied into a container: such a backup is refused.
   */
  async installRestoreKey(inst: Row<'instances'>, hostFile: string, keyId: string | undefined): Promise<string> {
    if (keyId === undefined) throw new Error('this backup was written with the server\'s master key (before per-instance keys), which is never given to a container: restore it with the local driver, or back it up again');
    const c = await this.instanceContainer(inst);
    await c.putArchive(packFiles([{ name: RESTORE_KEY.slice(1), content: fs.readFileSync(hostFile), uid: 0, gid: 0, mode: 0o400 }]), { path: '/' });
    return RESTORE_KEY;
  }

  /** Instances whose container is known to hold its key (made by this process, or copied in once). */
  protected readonly keyed = new Set<string>();

  /**
   * Before an instance's backups, once per control-plane process: a container made before per-instance keys
   * gets its key copied in, and every container the repository's credentials as this process has them (the
   * agent reads them at each open: rotated credentials take effect after the control plane's restart).
   */
  async ensureOwnKey(inst: Row<'instances'>): Promise<void> {
    if (this.keyed.has(inst.id)) return;
    const own = { uid: 0, gid: 0, mode: 0o400 };
    const files: MemoryFile[] = [];
    if (this.options.instanceKeys) files.push({ name: INSTANCE_KEY.slice(1), content: await this.options.instanceKeys.text(inst.id), ...own });
    const creds = this.storageCredentialsText();
    if (creds !== null) files.push({ name: STORAGE_CREDENTIALS.slice(1), content: creds, ...own });
    if (files.length > 0) await (await this.instanceContainer(inst)).putArchive(packFiles(files), { path: '/' });
    this.keyed.add(inst.id);
  }

  /** The container the instance's agent runs in. */
  protected async instanceContainer(inst: Row<'instances'>): Promise<Docker.Container> {
    return this.docker.getContainer(containerName(inst.id));
  }

  async removeRestoreKey(inst: Row<'instances'>): Promise<void> {
    const c = await this.instanceContainer(inst);
    const ex = await c.exec({ Cmd: ['rm', '-f', RESTORE_KEY], User: '0:0', AttachStdout: true, AttachStderr: true });
    const stream = await ex.start({});
    await new Promise<void>((resolve) => {
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.resume();
    });
    const code = (await ex.inspect()).ExitCode;
    if (code !== 0) throw new Error(`rm ${RESTORE_KEY} in ${containerName(inst.id)} exited with ${code}`);
  }

  async resizeVolume(): Promise<void> {
    // The volume's size is a quota the agent enforces, as with local instances.
  }

  async resizeFlavor(inst: Row<'instances'>, flavor: { ram: number; vcpus: number }): Promise<void> {
    const c = this.docker.getContainer(containerName(inst.id));
    // A lower memory limit is refused while the container uses more than it (page cache and kernel memory
    // too, on cgroup v1). Then CouchDB stops (the resize task restarts it next anyway) and the kernel
    // reclaims on each try; what it cannot give back, a new container (a new cgroup, same volume) does not hold.
    let stopped = false;
    for (let attempt = 1; ; attempt++) {
      try {
        await c.update(flavorLimits(flavor));
        return;
      } catch (err) {
        if (!/unable to set memory limit/.test((err as Error).message)) throw err;
        if (!stopped) {
          await (await this.agent(inst)).stop();
          stopped = true;
        } else if (attempt > 5) {
          this.options.log?.(`instance ${inst.id}: ${flavor.ram} MiB refused while the container holds ${await memoryUse(c)}: it is made again with the new limits`);
          return this.recreate(inst, flavor);
        } else {
          await sleep(1000);
        }
      }
    }
  }

  async destroy(inst: Row<'instances'>): Promise<void> {
    // CouchDB is stopped by its agent first (a clean shutdown), then the container goes.
    if (inst.agent_port && (await this.diagnose(inst)) === null) {
      try {
        const a = await this.agent(inst);
        await Promise.race([a.stop(), sleep(30_000)]);
      } catch {
        // removed below anyway
      }
    }
    try {
      await this.docker.getContainer(containerName(inst.id)).remove({ force: true, v: false });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      await this.docker.getVolume(volumeName(inst.id)).remove();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      await this.docker.getNetwork(containerName(inst.id)).remove();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    // Replication networks: its own as a source, and its source's once no other follower is on it.
    await this.removeReplicationNetwork(inst.id);
    if (inst.replica_of) await this.unlinkReplica(inst.replica_of, inst);
    this.clients.delete(inst.id);
    if (inst.port) this.allocating.delete(inst.port);
    if (inst.agent_port) this.allocating.delete(inst.agent_port);
    fs.rmSync(this.dir(inst.id), { recursive: true, force: true });
  }

  livePids(): number[] {
    return [];
  }
}

/** A container's memory by kind (Docker's stats: cgroup v1 and v2 name them differently), for error messages. */
async function memoryUse(c: Docker.Container): Promise<string> {
  try {
    const st = (await c.stats({ stream: false })).memory_stats.stats as unknown as Record<string, number | undefined>;
    const mib = (k: string): string => `${k} ${Math.round((st[k] ?? 0) / 1048576)} MiB`;
    return ['rss', 'anon', 'cache', 'file', 'shmem', 'kernel', 'unevictable', 'total_unevictable'].filter((k) => st[k] !== undefined).map(mib).join(', ');
  } catch (err) {
    return `its use unknown: ${(err as Error).message}`;
  }
}
