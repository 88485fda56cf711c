// The Docker Swarm compute driver (compute_driver = swarm): every instance is a service with one task
// of the guest image, pinned (placement constraint node.id) to the node that holds its named volume,
// chosen at create by free memory. Ports are published in host mode on that node (the ingress routing
// mesh needs IPVS, and a database wants a stable address): the instance's host is the node's address.
// The agent's config is a Swarm config at /etc/couchtrove/agent.json, its token and the backup key Swarm
// secrets (root, 0400; CouchDB runs as uid 5984): nothing secret in the service spec. Tasks are not restarted by Swarm
// (restart condition none): a task that dies, or a node that is lost, shows in `show` with the reason;
// `restart` forces a new task on the same node. Volumes live on their node: deleting an instance removes
// its volume through that node's own Docker API (swarm_node_hosts), or says it is left.
import type Docker from 'dockerode';
import type { Row } from '../../state/index.js';
import type { Placement } from '../driver.js';
import { connectDocker } from './connect.js';
import { AGENT_CAPS, AGENT_CONFIG, CLUSTER_SECRETS, clusterNetwork, containerName, DockerDriver, flavorLimits, INSTANCE_KEY, LABEL, STORAGE_CREDENTIALS, VOLUME_MOUNT, volumeName, type DockerDriverOptions } from './driver.js';
import { clusterSecretsFile } from '../driver.js';
import * as fs from 'node:fs';

export interface SwarmDriverOptions extends DockerDriverOptions {
  /** Node id or hostname -> that node's Docker API, to remove volumes there. */
  nodeHosts?: Record<string, string>;
}

// The subset of the Engine API's Node and Task objects used here (dockerode types them as any).
interface SwarmNode {
  ID: string;
  Description: { Hostname: string; Resources: { MemoryBytes: number; NanoCPUs: number } };
  Status: { State: string; Addr: string; Message?: string };
  Spec: { Availability: string };
}
interface SwarmTask {
  ID: string;
  NodeID?: string;
  CreatedAt: string;
  DesiredState: string;
  Status: { State: string; Err?: string; Message?: string; Timestamp: string };
}

const isNotFound = (err: unknown): boolean => (err as { statusCode?: number }).statusCode === 404;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TOKEN_TARGET = 'agent.token';

export class SwarmDriver extends DockerDriver {
  override readonly name = 'swarm';

  constructor(protected readonly swarm: SwarmDriverOptions) {
    super(swarm);
  }

  /** The image as service specs name it (see init). */
  private imageRef = '';

  override async init(): Promise<void> {
    await super.init();
    // A task whose image is a tag makes its node try a pull first (with no registry reachable, until a
    // network timeout): an image from a registry is named by its digest, a local one by its id, which
    // every node must hold (docker save | docker load, or a pull beforehand).
    const img = await this.docker.getImage(this.options.image).inspect();
    this.imageRef = img.RepoDigests?.[0] ?? img.Id;
    const info = (await this.docker.info()) as { Swarm?: { ControlAvailable?: boolean } };
    if (!info.Swarm?.ControlAvailable) throw new Error('compute_driver = swarm: the Docker daemon at docker_host is not a swarm manager');
  }

  async nodes(): Promise<SwarmNode[]> {
    return (await this.docker.listNodes()) as SwarmNode[];
  }

  private async tasks(id: string): Promise<SwarmTask[]> {
    const all = (await this.docker.listTasks({ filters: JSON.stringify({ service: [containerName(id)] }) })) as SwarmTask[];
    return all.sort((a, b) => b.CreatedAt.localeCompare(a.CreatedAt));
  }

  /**
   * The ready, active node with the most memory not promised to instances; ties: the fewest instances. A
   * cluster member goes first to a node with the fewest members of its cluster (one per node while there are
   * enough nodes: a node lost then takes one copy of each range at most).
   */
  private async chooseNode(ram: number, clusterId: string | null = null): Promise<SwarmNode> {
    const services = await this.docker.listServices({ filters: JSON.stringify({ label: [LABEL] }) });
    const promised = new Map<string, { bytes: number; count: number; members: number }>();
    for (const s of services) {
      const node = s.Spec?.Labels?.['org.couchtrove.node'];
      if (!node) continue;
      const p = promised.get(node) ?? { bytes: 0, count: 0, members: 0 };
      p.bytes += s.Spec?.TaskTemplate?.Resources?.Reservations?.MemoryBytes ?? 0;
      p.count += 1;
      if (clusterId && s.Spec?.Labels?.['org.couchtrove.cluster'] === clusterId) p.members += 1;
      promised.set(node, p);
    }
    const ready = (await this.nodes()).filter((n) => n.Status.State === 'ready' && n.Spec.Availability === 'active');
    const scored = ready.map((n) => ({ n, free: n.Description.Resources.MemoryBytes - (promised.get(n.ID)?.bytes ?? 0), count: promised.get(n.ID)?.count ?? 0, members: promised.get(n.ID)?.members ?? 0 }))
      .filter((x) => x.free >= ram)
      .sort((a, b) => a.members - b.members || b.free - a.free || a.count - b.count || a.n.ID.localeCompare(b.n.ID));
    if (!scored[0]) throw new Error(`no ready swarm node has ${ram / 1024 / 1024} MiB free`);
    return scored[0].n;
  }

  private async ensureSecret(name: string, data: Buffer, labels: Record<string, string>): Promise<string> {
    try {
      return (await this.docker.getSecret(name).inspect()).ID;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const r = (await this.docker.createSecret({ Name: name, Labels: labels, Data: data.toString('base64') })) as { id?: string; ID?: string };
    return (r.id ?? r.ID)!;
  }

  private async ensureConfig(name: string, data: string, labels: Record<string, string>): Promise<string> {
    try {
      return (await this.docker.getConfig(name).inspect()).ID;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const r = (await this.docker.createConfig({ Name: name, Labels: labels, Data: Buffer.from(data).toString('base64') })) as { id?: string; ID?: string };
    return (r.id ?? r.ID)!;
  }

  override async provision(inst: Row<'instances'>, options: { readOnly?: string[] } = {}): Promise<Placement> {
    const h = await this.hostSide(inst);
    const lent = this.lentDirs(options.readOnly);
    // Cluster members are placed one at a time, each seeing where the others went (chooseNode).
    const node = inst.cluster_id ? await this.serial(() => this.ensureService(inst, h, lent)) : await this.ensureService(inst, h, lent);
    const placement: Placement = {
      host: node.Status.Addr, port: h.port, agentPort: h.agentPort, epmdPort: h.epmdPort, ...(h.distPort ? { distPort: h.distPort } : {}), agentPid: null, instanceDir: h.dir, engine: this.engine.kind,
    };
    return this.ensureAgent({ ...inst, host: placement.host, port: h.port, agent_port: h.agentPort, epmd_port: h.epmdPort, instance_dir: h.dir }, placement);
  }

  /** The instance's service, made unless it exists; the node it is pinned to. */
  private async ensureService(inst: Row<'instances'>, h: Awaited<ReturnType<DockerDriver['hostSide']>>, lent: string[]): Promise<SwarmNode> {
    const name = containerName(inst.id);
    const flavor = this.flavor(inst);
    const limits = flavorLimits(flavor);
    const labels = { [LABEL]: inst.id, 'org.couchtrove.project': inst.project_id };
    let node: SwarmNode;
    let service: Docker.Service | null = this.docker.getService(name);
    try {
      const spec = (await service.inspect()) as { Spec: { Labels?: Record<string, string> } };
      const id = spec.Spec.Labels?.['org.couchtrove.node'];
      node = (await this.nodes()).find((n) => n.ID === id)!;
      if (!node) throw new Error(`the node ${id} of instance ${inst.id} is no longer in the swarm`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      service = null;
      node = await this.chooseNode(limits.Memory, inst.cluster_id ?? null);
    }
    if (!service) {
      const owner = { UID: '0', GID: '0', Mode: 0o400 };
      const tokenId = await this.ensureSecret(`${name}-token`, Buffer.from(`${h.token}\n`), labels);
      const configId = await this.ensureConfig(`${name}-agent`, JSON.stringify(this.serveConfig(h.agentPort, `/run/secrets/${TOKEN_TARGET}`), null, 2) + '\n', labels);
      const secrets: Docker.SecretReference[] = [{ SecretID: tokenId, SecretName: `${name}-token`, File: { Name: TOKEN_TARGET, ...owner } }];
      if (this.options.instanceKeys) {
        // The instance's own key only, as a secret of its own (removed with the service).
        const keyId = await this.ensureSecret(`${name}-key`, Buffer.from(await this.options.instanceKeys.text(inst.id), 'latin1'), labels);
        secrets.push({ SecretID: keyId, SecretName: `${name}-key`, File: { Name: INSTANCE_KEY, ...owner } });
      }
      secrets.push(...(await this.storageSecret(name, labels)));
      // A cluster member's copy of the cluster's secrets (the Erlang cookie), a secret of its own, and the
      // cluster's overlay, which only the cluster's members join (see createClusterNetwork).
      const networks: Array<{ Target: string }> = [];
      if (inst.cluster_id) {
        const cid = await this.ensureSecret(`${name}-cluster`, fs.readFileSync(clusterSecretsFile(this.options.stateDir, inst.cluster_id)), labels);
        secrets.push({ SecretID: cid, SecretName: `${name}-cluster`, File: { Name: CLUSTER_SECRETS, ...owner } });
        networks.push({ Target: await this.createClusterNetwork(inst, clusterNetwork(inst.cluster_id)) });
      }
      // As the docker driver: its own part of a file:// repository (the directory every node mounts at the
      // same path), another instance's read-only while it restores from it (endRestore).
      const part = this.partDir(inst.id);
      if (part) fs.mkdirSync(part, { recursive: true, mode: 0o700 });
      await this.docker.createService({
        Name: name,
        Labels: { ...labels, 'org.couchtrove.node': node.ID, ...(inst.cluster_id ? { 'org.couchtrove.cluster': inst.cluster_id } : {}) },
        TaskTemplate: {
          ContainerSpec: {
            Image: this.imageRef,
            Labels: labels,
            User: '0:0',
            // As the docker driver: the agent keeps only what it needs, CouchDB runs as GUEST_UID.
            CapabilityDrop: ['ALL'],
            CapabilityAdd: AGENT_CAPS,
            Mounts: [
              { Type: 'volume', Source: volumeName(inst.id), Target: VOLUME_MOUNT, VolumeOptions: { Labels: labels } },
              ...(part ? [{ Type: 'bind' as const, Source: part, Target: part }] : []),
              ...lent.filter((d) => d !== part).map((d) => ({ Type: 'bind' as const, Source: d, Target: d, ReadOnly: true })),
            ],
            Secrets: secrets,
            Configs: [{ ConfigID: configId, ConfigName: `${name}-agent`, File: { Name: AGENT_CONFIG, ...owner, Mode: 0o400 } }],
            Init: true,
          } as Docker.ContainerSpec,
          // Alone on an overlay network of its own: no other instance's task shares a link with it (see ensureNetwork).
          // A replica also joins its source's overlay, to follow it there (linkReplica).
          Networks: [{ Target: await this.ensureNetwork(inst) }, ...(await this.sourceNetwork(inst)), ...networks],
          Resources: { Limits: { MemoryBytes: limits.Memory, NanoCPUs: limits.NanoCpus }, Reservations: { MemoryBytes: limits.Memory } },
          RestartPolicy: { Condition: 'none' },
          Placement: { Constraints: [`node.id == ${node.ID}`] },
        },
        Mode: { Replicated: { Replicas: 1 } },
        EndpointSpec: {
          Ports: [h.port, h.agentPort].map((p) => ({ Protocol: 'tcp' as const, TargetPort: p, PublishedPort: p, PublishMode: 'host' as const })),
        },
      });
    }
    return node;
  }

  /**
   * A member's node is named after its task's name in the swarm's DNS (tasks.<service>: the task's own address
   * on the cluster's overlay, whatever node or task it runs as; the service name would give a virtual IP, which
   * needs IPVS).
   */
  override clusterNode(inst: Pick<Row<'instances'>, 'id'>): string {
    return `couchdb@tasks.${containerName(inst.id)}`;
  }

  protected override readonly clusterNetworkDriver = 'overlay';

  /** The cluster's overlay goes once its members' tasks have left it (the manager refuses, 409, until then). */
  override async destroyCluster(clusterId: string): Promise<void> {
    await this.removeOverlay(clusterNetwork(clusterId), `cluster ${clusterId}`);
  }

  override async diagnose(inst: Row<'instances'>): Promise<string | null> {
    let tasks: SwarmTask[];
    let nodes: SwarmNode[];
    try {
      tasks = await this.tasks(inst.id);
      nodes = await this.nodes();
    } catch (err) {
      return `the swarm manager does not answer: ${(err as Error).message}`;
    }
    const t = tasks[0];
    if (!t) return `service ${containerName(inst.id)} has no task`;
    const node = nodes.find((n) => n.ID === t.NodeID);
    if (node && node.Status.State !== 'ready') return `node ${node.Description.Hostname} (${node.ID}) is ${node.Status.State}${node.Status.Message ? `: ${node.Status.Message}` : ''}; recover with create --backup on another node`;
    if (t.Status.State === 'running') return null;
    // A service update's new task waits with desired state `ready` until the old one has stopped (its
    // host-mode ports are in use until then): being scheduled, not a fault.
    if (['new', 'pending', 'assigned', 'accepted', 'preparing', 'starting', 'ready'].includes(t.Status.State) && ['running', 'ready'].includes(t.DesiredState)) return null;
    return `task ${t.ID} of service ${containerName(inst.id)} is ${t.Status.State}${t.Status.Err ? `: ${t.Status.Err}` : ''} since ${t.Status.Timestamp}`;
  }

  /** A new task for the service (same node, same volume): after a dead task, or with a new spec. */
  private async update(inst: Row<'instances'>, change: (spec: Docker.ServiceSpec) => void): Promise<void> {
    const svc = this.docker.getService(containerName(inst.id));
    const info = (await svc.inspect()) as { Version: { Index: number }; Spec: Docker.ServiceSpec };
    const spec = info.Spec;
    change(spec);
    await svc.update({ version: info.Version.Index, ...spec });
    this.clients.delete(inst.id);
  }

  override async ensureAgent(inst: Row<'instances'>, placement?: Placement): Promise<Placement> {
    const p: Placement = placement ?? {
      host: inst.host ?? '', port: inst.port ?? 0, agentPort: inst.agent_port ?? 0, epmdPort: inst.epmd_port ?? 0,
      agentPid: null, instanceDir: inst.instance_dir ?? this.dir(inst.id), engine: this.engine.kind,
    };
    const probe = { ...inst, host: p.host, agent_port: p.agentPort, instance_dir: p.instanceDir };
    if (await this.answers(probe)) return p;
    const t = (await this.tasks(inst.id))[0];
    if (t && !['new', 'pending', 'assigned', 'accepted', 'preparing', 'starting', 'running'].includes(t.Status.State)) {
      await this.update(inst, (spec) => {
        if (spec.TaskTemplate) spec.TaskTemplate.ForceUpdate = (spec.TaskTemplate.ForceUpdate ?? 0) + 1;
      });
    }
    const limit = this.options.agentStartMs ?? 120_000;
    const until = Date.now() + limit;
    let why: string | null = null;
    while (Date.now() < until) {
      if (await this.answers(probe)) return p;
      why = await this.diagnose(inst);
      // A task that failed for good says so at once; one being scheduled is waited for.
      if (why && !why.startsWith('service')) {
        const latest = (await this.tasks(inst.id))[0];
        if (latest && ['failed', 'rejected', 'shutdown', 'complete', 'orphaned'].includes(latest.Status.State)) throw new Error(`the agent of instance ${inst.id} did not start: ${why}`);
      }
      await sleep(300);
    }
    throw new Error(`the agent of instance ${inst.id} did not answer within ${limit / 1000} s${why ? `: ${why}` : ''}`);
  }

  /** The repository's credentials as a secret of the instance's own (couchtrove-<id>-storage, removed with it); none for file://. */
  private async storageSecret(name: string, labels: Record<string, string>): Promise<Docker.SecretReference[]> {
    const creds = this.storageCredentialsText();
    if (creds === null) return [];
    const id = await this.ensureSecret(`${name}-storage`, Buffer.from(creds), labels);
    return [{ SecretID: id, SecretName: `${name}-storage`, File: { Name: STORAGE_CREDENTIALS, UID: '0', GID: '0', Mode: 0o400 } }];
  }

  /** The key is a secret of the service, fixed at its creation (a service made before per-instance keys has none: docs/compute.md). */
  override async ensureOwnKey(): Promise<void> {}

  /**
   * The lent read-only mounts go: Swarm replaces the task (same node, same volume). Waited for until the new
   * task runs and its agent answers: the old one would answer until it is shut down.
   */
  override async endRestore(inst: Row<'instances'>): Promise<void> {
    const info = (await this.docker.getService(containerName(inst.id)).inspect()) as { Spec: Docker.ServiceSpec };
    const c = (info.Spec.TaskTemplate as { ContainerSpec?: { Mounts?: Array<{ ReadOnly?: boolean }> } } | undefined)?.ContainerSpec;
    if (!c?.Mounts?.some((m) => m.ReadOnly)) return;
    await this.replaceTask(inst, 'without the restore mount', (spec) => {
      const cs = (spec.TaskTemplate as { ContainerSpec?: { Mounts?: Array<{ ReadOnly?: boolean }> } } | undefined)?.ContainerSpec;
      if (cs?.Mounts) cs.Mounts = cs.Mounts.filter((m) => !m.ReadOnly);
    });
  }

  /** Updates the service and waits until the new task runs and its agent answers: the old one would answer until it is shut down. */
  private async replaceTask(inst: Row<'instances'>, what: string, change: (spec: Docker.ServiceSpec) => void): Promise<void> {
    const before = new Set((await this.tasks(inst.id)).map((t) => t.ID));
    await this.update(inst, change);
    const until = Date.now() + (this.options.agentStartMs ?? 120_000);
    while (!(await this.tasks(inst.id)).some((t) => !before.has(t.ID) && t.Status.State === 'running')) {
      if (Date.now() > until) throw new Error(`instance ${inst.id}: the task ${what} did not start`);
      await sleep(300);
    }
    this.clients.delete(inst.id);
    await this.ensureAgent(inst);
  }

  /**
   * A replica reaches its source on the source's own overlay (couchtrove-<source>), which its service joins:
   * at creation for a new replica (provision), by a service update (a new task, same node and volume) when it
   * starts to follow another instance (promote, eject). Overlays carry traffic between any tasks on them, so
   * the source's serves, and only the source and its followers are on it. The URL is the source task's name in
   * the swarm's DNS (tasks.<service>: the task's own address; the service's virtual IP needs IPVS).
   */
  override async linkReplica(source: Row<'instances'>, follower: Row<'instances'>): Promise<string> {
    if (!source.port) throw new Error(`the source instance ${source.id} has no CouchDB port yet`);
    await this.followerNetwork(follower, source.id, true);
    return `http://tasks.${containerName(source.id)}:${source.port}`;
  }

  /** Takes the follower's service off the source's overlay (a new task); the overlay itself goes with the source. */
  override async unlinkReplica(sourceId: string, follower: Row<'instances'>): Promise<void> {
    await this.followerNetwork(follower, sourceId, false);
  }

  private async followerNetwork(inst: Row<'instances'>, sourceId: string, on: boolean): Promise<void> {
    const name = containerName(sourceId);
    let netId: string;
    try {
      netId = ((await this.docker.getNetwork(name).inspect()) as { Id: string }).Id;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (on) throw new Error(`the network ${name} of the source instance ${sourceId} is gone`);
      return;
    }
    let spec: Docker.ServiceSpec;
    try {
      spec = ((await this.docker.getService(containerName(inst.id)).inspect()) as { Spec: Docker.ServiceSpec }).Spec;
    } catch (err) {
      if (!isNotFound(err) || on) throw err;
      return;
    }
    const nets = (spec.TaskTemplate as { Networks?: Array<{ Target?: string }> } | undefined)?.Networks ?? [];
    const mine = (n: { Target?: string }) => n.Target === netId || n.Target === name;
    // Joining a source's overlay also leaves a former source's (promote, eject): one new task, not two.
    const ownName = containerName(inst.id);
    const ownId = ((await this.docker.getNetwork(ownName).inspect().catch(() => ({ Id: ownName }))) as { Id: string }).Id;
    const own = (n: { Target?: string }) => n.Target === ownId || n.Target === ownName;
    if (on ? nets.some(mine) && nets.every((n) => mine(n) || own(n)) : !nets.some(mine)) return;
    const next = on ? [...nets.filter(own), { Target: netId }] : nets.filter((n) => !mine(n));
    await this.replaceTask(inst, on ? `on the network ${name}` : `off the network ${name}`, (s) => {
      const t = s.TaskTemplate as { Networks?: Array<{ Target?: string }> } | undefined;
      if (t) t.Networks = next;
    });
    // CouchDB comes back with the new task (the agent starts it from the volume): followPrimary needs it.
    const until = Date.now() + (this.options.agentStartMs ?? 120_000);
    while ((await (await this.agent(inst)).status().catch(() => null))?.state !== 'RUNNING') {
      if (Date.now() > until) throw new Error(`instance ${inst.id}: CouchDB did not come back in its new task`);
      await sleep(300);
    }
  }

  override async resizeFlavor(inst: Row<'instances'>, flavor: { ram: number; vcpus: number }): Promise<void> {
    const l = flavorLimits(flavor);
    // Swarm replaces the task on the same node (the constraint): CouchDB restarts on the same volume. The old
    // task's agent answers until it is shut down, so wait for the new one (the resize task talks to it next).
    await this.replaceTask(inst, 'with the new limits', (spec) => {
      if (spec.TaskTemplate) spec.TaskTemplate.Resources = { Limits: { MemoryBytes: l.Memory, NanoCPUs: l.NanoCpus }, Reservations: { MemoryBytes: l.Memory } };
    });
  }

  /** The running task's container, through its node's own API (swarm_node_hosts; the manager's for itself). */
  protected override async instanceContainer(inst: Row<'instances'>): Promise<Docker.Container> {
    const all = (await this.docker.listTasks({ filters: JSON.stringify({ service: [containerName(inst.id)], 'desired-state': ['running'] }) })) as Array<SwarmTask & { Status: { ContainerStatus?: { ContainerID?: string } } }>;
    const t = all.find((x) => x.Status.ContainerStatus?.ContainerID);
    if (!t) throw new Error(`instance ${inst.id} has no running task`);
    const node = (await this.nodes()).find((n) => n.ID === t.NodeID);
    const host = node ? (this.swarm.nodeHosts?.[node.ID] ?? this.swarm.nodeHosts?.[node.Description.Hostname]) : undefined;
    return (host ? connectDocker(host) : this.docker).getContainer(t.Status.ContainerStatus!.ContainerID!);
  }

  /**
   * One overlay network per instance (couchtrove-<id>), not attachable: its task is the only container on it.
   * For outside traffic Docker also gives the task the node's docker_gwbridge, whose inter-container traffic
   * is off, and its ports are published on the node's address (host mode). So, as with the docker driver,
   * no instance reaches another's CouchDB or agent by a container address.
   */
  protected override async ensureNetwork(inst: Row<'instances'>): Promise<string> {
    const name = containerName(inst.id);
    try {
      await this.docker.getNetwork(name).inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.docker.createNetwork({ Name: name, Driver: 'overlay', CheckDuplicate: true, Attachable: false, Labels: { [LABEL]: inst.id, 'org.couchtrove.project': inst.project_id } });
    }
    return name;
  }

  /** A new replica's source's overlay, when there is one to join. */
  private async sourceNetwork(inst: Row<'instances'>): Promise<Array<{ Target: string }>> {
    if (!inst.replica_of) return [];
    try {
      return [{ Target: ((await this.docker.getNetwork(containerName(inst.replica_of)).inspect()) as { Id: string }).Id }];
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return []; // linkReplica says so
    }
  }

  /** The overlay goes once its task has: the manager refuses (409) while a task is still attached. */
  private async removeNetwork(inst: Row<'instances'>): Promise<void> {
    await this.removeOverlay(containerName(inst.id), `instance ${inst.id}`);
  }

  private async removeOverlay(name: string, owner: string): Promise<void> {
    for (const until = Date.now() + 60_000; ; await sleep(500)) {
      try {
        await this.docker.getNetwork(name).remove();
        return;
      } catch (err) {
        if (isNotFound(err)) return;
        if (Date.now() > until) {
          this.options.log?.(`${owner}: its network ${name} could not be removed: ${(err as Error).message}`);
          return;
        }
      }
    }
  }

  override async destroy(inst: Row<'instances'>): Promise<void> {
    const name = containerName(inst.id);
    let nodeId: string | undefined;
    try {
      const spec = (await this.docker.getService(name).inspect()) as { Spec: { Labels?: Record<string, string> } };
      nodeId = spec.Spec.Labels?.['org.couchtrove.node'];
      if (inst.agent_port && (await this.diagnose(inst)) === null) {
        try {
          await Promise.race([(await this.agent(inst)).stop(), sleep(30_000)]);
        } catch {
          // removed below anyway
        }
      }
      await this.docker.getService(name).remove();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    for (const s of [`${name}-token`, `${name}-key`, `${name}-storage`, `${name}-cluster`]) await this.docker.getSecret(s).remove().catch(() => undefined);
    await this.removeNetwork(inst);
    await this.docker.getConfig(`${name}-agent`).remove().catch(() => undefined);
    // The volume is on its node, removable once the task's container is gone, through that node's API.
    const node = nodeId ? (await this.nodes().catch(() => [])).find((n) => n.ID === nodeId) : undefined;
    const host = node ? (this.swarm.nodeHosts?.[node.ID] ?? this.swarm.nodeHosts?.[node.Description.Hostname]) : undefined;
    if (host) {
      const d = connectDocker(host);
      const until = Date.now() + 60_000;
      for (;;) {
        try {
          await d.getVolume(volumeName(inst.id)).remove();
          break;
        } catch (err) {
          if (isNotFound(err)) break;
          // 409: in use until the task's container is removed. Anything else (a lost node): say what is left.
          if ((err as { statusCode?: number }).statusCode !== 409 || Date.now() > until) {
            this.options.log?.(`instance ${inst.id}: its volume ${volumeName(inst.id)} could not be removed from node ${node!.Description.Hostname}: ${(err as Error).message}`);
            break;
          }
          await sleep(500);
        }
      }
    } else if (node) {
      this.options.log?.(`instance ${inst.id}: its volume ${volumeName(inst.id)} is left on node ${node.Description.Hostname}: swarm_node_hosts names no Docker API for it`);
    }
    this.clients.delete(inst.id);
    fs.rmSync(this.dir(inst.id), { recursive: true, force: true });
  }
}
