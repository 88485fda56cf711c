// `couchtrove server` assembled: configuration, state store, the local compute driver, the control
// plane (with task recovery) and the Trove API.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { openState, type StateStore } from '../state/index.js';
import type { ServerConfig } from '../config/server.js';
import { LocalProcessDriver, type AgentFactory } from '../compute/local.js';
import type { ComputeDriver } from '../compute/driver.js';
import { ControlPlane, type BackupEngine } from '../tasks/control.js';
import { BackupScheduler } from '../tasks/schedules.js';
import { openStorage } from '../storage/index.js';
import { repositoryCredentials } from '../storage/credentials.js';
import { deleteBackup, readBackupMetadata, verifyBackup } from '../backup/index.js';
import { openBackup } from '../backup/repository.js';
import { summaryOf } from '../backup/backup.js';
import { KeyRing, readKeyFile, writeNewKeyFile } from '../crypto/keys.js';
import { instanceKeysFor } from '../crypto/instance-keys.js';
import { buildApi, LOCAL_TOKEN } from './server.js';
import { lockStateDir } from '../state/lock.js';
import { ServiceError } from '../tasks/errors.js';
import { CouchtroveError, describeError } from '../util/errors.js';

/** The backup engine as the control plane uses it. */
export const backupEngine: BackupEngine = {
  async storedChecksum(repository, id, keyFile) {
    const storage = await openStorage(repository);
    try {
      const key = keyFile ? new KeyRing(await readKeyFile(keyFile)) : undefined;
      const { summary } = await readBackupMetadata(storage, id, key);
      return summary.checksum;
    } finally {
      await storage.close();
    }
  },
  async stored(repository, id, keyFile) {
    const storage = await openStorage(repository);
    try {
      const key = keyFile ? new KeyRing(await readKeyFile(keyFile)) : undefined;
      return (await readBackupMetadata(storage, id, key)).summary;
    } catch (err) {
      if ((err as Error).name === 'BackupNotFoundError') return null;
      throw err;
    } finally {
      await storage.close();
    }
  },
  async verify(repository, id, keyFile) {
    const storage = await openStorage(repository);
    try {
      const key = keyFile ? new KeyRing(await readKeyFile(keyFile)) : undefined;
      // The manifest first (its seal under the key its keyId names), then every byte of the chain.
      const { manifest } = await openBackup(storage, id, key);
      const r = await verifyBackup({ storage, id, ...(key ? { key } : {}) });
      const enc = manifest.body.encryption;
      return { keyId: enc ? enc.keyId : null, checksum: summaryOf(manifest.body).checksum, bytes: r.bytes };
    } finally {
      await storage.close();
    }
  },
  async delete(repository, id, keyFile) {
    const storage = await openStorage(repository);
    try {
      // The ring authenticates every backup's manifest with the key its keyId names (derived from the master).
      await deleteBackup(storage, id, keyFile ? new KeyRing(await readKeyFile(keyFile)) : undefined);
    } catch (err) {
      if ((err as Error).name !== 'BackupNotFoundError') throw err;
    } finally {
      await storage.close();
    }
  },
};

export interface RunningServer {
  url: string;
  plane: ControlPlane;
  app: FastifyInstance;
  store: StateStore;
  scheduler: BackupScheduler;
  close(): Promise<void>;
}

export interface StartOptions {
  log?: (line: string) => void;
  /** The request log (src/util/log.ts); without it, accessLog writes plain lines through log. */
  requestLogger?: Logger;
  compute?: ComputeDriver;
  agentFactory?: AgentFactory;
  /** The backup engine (default: the real one, backupEngine); tests and the fleet benchmark simulate it. */
  backups?: BackupEngine;
  accessLog?: boolean;
  /** How often backup schedules are checked, ms (default 15 s). */
  scheduleTickMs?: number;
}

/** The Docker driver, checked against its daemon and image before anything is served. */
async function dockerDriver(config: ServerConfig, usedPorts: () => Promise<number[]>, log: (l: string) => void, agentFactory?: AgentFactory): Promise<ComputeDriver> {
  // Loaded only when configured: dockerode is not needed by local instances.
  const { DockerDriver } = await import('../compute/docker/driver.js');
  const { SwarmDriver } = await import('../compute/docker/swarm.js');
  const keys = instanceKeysFor(config);
  let storageCredentials: Record<string, string> | null;
  try {
    // The object store's variables from this process's environment, for each container (null: file://).
    storageCredentials = repositoryCredentials(config.repository, process.env, config.dockerStorageAddress);
  } catch (err) {
    throw new CouchtroveError(`compute_driver = ${config.computeDriver}, repository ${config.repository}: ${describeError(err)}`);
  }
  const o = {
    stateDir: config.stateDir,
    ...(config.dockerHost ? { dockerHost: config.dockerHost } : {}),
    image: config.dockerImage,
    publishAddress: config.dockerPublishAddress,
    repository: config.repository,
    storageCredentials,
    ...(keys ? { instanceKeys: keys } : {}),
    flavors: config.flavors,
    tcpPorts: config.couchdb.tcpPorts,
    usedPorts,
    log,
    ...(agentFactory ? { agentFactory } : {}),
  };
  const d = config.computeDriver === 'swarm' ? new SwarmDriver({ ...o, nodeHosts: config.swarmNodeHosts }) : new DockerDriver(o);
  await d.init();
  log(`compute driver ${d.name}: image ${config.dockerImage} (${d.engine.kind}), ports published on ${config.dockerPublishAddress}`);
  return d;
}

export async function startServer(config: ServerConfig, options: StartOptions = {}): Promise<RunningServer> {
  const log = options.log ?? ((l: string) => process.stderr.write(`${new Date().toISOString()} ${l}\n`));
  fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  // First of all, before any file or task is touched: one process per SQLite state directory. With
  // PostgreSQL several control-plane processes may run on purpose.
  const lock = config.databaseUrl ? null : lockStateDir(config.stateDir);
  const cleanup: Array<() => Promise<void> | void> = [() => lock?.release()];
  const unwind = async (): Promise<void> => {
    for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  };
  try {
    const repo = new URL(config.repository);
    if (repo.protocol === 'file:') fs.mkdirSync(decodeURIComponent(repo.pathname), { recursive: true, mode: 0o700 });
    if (config.backupEncryption && !config.backupKeyFile) {
      const keyFile = path.join(config.stateDir, 'backup.key');
      if (!fs.existsSync(keyFile)) {
        await writeNewKeyFile(keyFile);
        log(`made the backup encryption key ${keyFile} (0600): keep a copy, backups cannot be restored without it`);
      }
    }
    const store = await openState(config.databaseUrl ? { databaseUrl: config.databaseUrl, poolSize: config.databasePool } : { stateDir: config.stateDir });
    cleanup.push(() => store.close());
    const usedPorts = async (): Promise<number[]> => (await store.find('instances')).flatMap((i) => [i.port, i.agent_port, i.epmd_port].filter((p): p is number => p !== null));
    const compute = options.compute ?? (config.computeDriver !== 'local' ? await dockerDriver(config, usedPorts, log, options.agentFactory) : new LocalProcessDriver({
      stateDir: config.stateDir,
      ...(config.couchdbHome ? { couchdbHome: config.couchdbHome } : {}),
      tcpPorts: config.couchdb.tcpPorts,
      isolation: config.instanceIsolation,
      uidRange: config.instanceUids,
      log,
      usedPorts,
      ...(options.agentFactory ? { agentFactory: options.agentFactory } : {}),
    }));
    if (compute.engine.warning) log(`WARNING: ${compute.engine.warning}`);
    else log(`instances run Apache CouchDB from ${compute.engine.home}`);
    if (config.authMode === 'local') {
      log(`WARNING: local auth mode: the token "${LOCAL_TOKEN}" (what clients send without auth) is accepted for project "${config.localProject}"; set auth_mode = token and [project:ID] tokens for anything shared`);
    }
    const plane = new ControlPlane({ config, store, compute, backups: options.backups ?? backupEngine, log });
    cleanup.push(() => plane.stop());
    // Made here, started after recovery: readiness (GET /health/ready) reports it until then.
    const scheduler = new BackupScheduler(plane, { log, ...(options.scheduleTickMs !== undefined ? { tickMs: options.scheduleTickMs } : {}) });
    const app = await buildApi({ plane, log, accessLog: options.accessLog ?? false, scheduler, ...(options.requestLogger ? { requestLogger: options.requestLogger } : {}) });
    cleanup.push(() => app.close());
    // The listener is bound before any task is recovered: a port that is taken stops the start here.
    // Requests wait until recovery is done (tasks it resumes must not race new ones).
    let started!: () => void;
    let failed = false;
    const ready = new Promise<void>((resolve) => (started = resolve));
    app.addHook('onRequest', async (req) => {
      // Probes answer at once: alive while recovery runs, and not ready until it is done.
      if (req.routeOptions.url === '/health' || req.routeOptions.url === '/health/ready') return;
      await ready;
      if (failed) throw new ServiceError(503, 'serviceUnavailable', 'The server failed to start.');
    });
    cleanup.push(() => {
      failed = true;
      started();
    });
    let addr: string;
    try {
      addr = await app.listen({ host: config.host, port: config.port });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const where = `${config.host}:${config.port}`;
      if (code === 'EADDRINUSE') throw new CouchtroveError(`cannot listen on ${where}: the port is already in use (EADDRINUSE); stop what uses it or give another --port`);
      throw new CouchtroveError(`cannot listen on ${where}: ${describeError(err)}`);
    }
    const recovered = await plane.start();
    if (recovered.resumed.length || recovered.failed.length) log(`tasks interrupted by the last stop: ${recovered.resumed.length} resumed, ${recovered.failed.length} failed`);
    // Backup schedules: the first tick runs, once, what fell due while the server was down.
    scheduler.start();
    started();
    const url = addr.replace('[::1]', '127.0.0.1');
    if (!config.publicUrl && ['0.0.0.0', '::', '[::]'].includes(config.host)) {
      log(`WARNING: public_url is not set: links in responses name ${config.host}, which clients cannot reach; set public_url (or --public-url) to the URL they use`);
    }
    log(`couchtrove API on ${url}/v1.0/{project_id} (state: ${store.kind} ${store.location}; backups: ${config.repository})`);
    let closed = false;
    return {
      url, plane, app, store, scheduler,
      close: async () => {
        if (closed) return;
        closed = true;
        await app.close();
        await scheduler.stop();
        await plane.stop();
        await store.close();
        lock?.release();
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
