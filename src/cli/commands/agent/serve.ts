// `couchtrove agent serve --config FILE`: the agent's RPC for the control plane, until SIGTERM/SIGINT.
// CouchDB is left running when the agent stops; the next agent process adopts it.
import { defineCommand, untilStopSignal } from '../../command.js';

export const serveCommand = defineCommand({
  path: ['agent', 'serve'],
  summary: 'Serve the agent RPC (bearer token from the file named in the config) until SIGTERM',
  required: ['agentConfig'],
  optional: ['logLevel', 'privilegedFd'],
  run: async (o, io) => {
    // Loaded here, not at the top: every other command would pay for the HTTP server's start-up.
    const { Agent } = await import('../../../agent/agent.js');
    const { readServeConfig, readTokenFile, startAgentServer } = await import('../../../agent/server.js');
    const cfg = await readServeConfig(o.agentConfig);
    const token = await readTokenFile(cfg.tokenFile);
    // In a container the object store's credentials are a file of root's, not this process's environment.
    const { useCredentialsFile } = await import('../../../storage/credentials.js');
    useCredentialsFile(cfg.storageCredentialsFile);
    const { makeLogger, lineLogger } = await import('../../../util/log.js');
    // JSON lines into agent.log (its stderr), with the instance's id once it is known; the RPC polls
    // (status, volume, progress, replication, archive, stats, logs) at debug, so that info shows what changed.
    let instanceId = (): string | undefined => undefined;
    const logger = makeLogger({ name: 'agent', level: o.logLevel ?? 'info', stream: io.stderr });
    const polling = (l: string): boolean => /^GET \/v1\/(status|volume|progress|replication|stats|logs|archive)\b.* [23]\d\d \d+ms$/.test(l);
    const log = lineLogger(logger, polling, (): Record<string, string> => {
      const id = instanceId();
      return id ? { instance_id: id } : {};
    });
    // Under `agent entry` (a container), files are given to the instance by the parent (src/agent/privileged.ts).
    const { privilegedClient } = await import('../../../agent/privileged.js');
    const agent = await Agent.open(cfg.instanceDir, { log, ...(o.privilegedFd !== undefined ? { privileged: privilegedClient(o.privilegedFd) } : {}) });
    instanceId = () => agent.instanceId;
    const server = await startAgentServer({ host: cfg.host, port: cfg.port, token, agent, log });
    // Replicas reconcile their replication (new/deleted databases, _security) every few seconds.
    const stopReplicationSync = agent.startReplicationSync(5000);
    // Client writes beyond the volume quota are refused (src/agent/quota.ts).
    const stopQuotaWatch = agent.startQuotaWatch(10_000);
    // Settings the agent manages, changed in memory over HTTP by a server admin, go back within seconds.
    const stopManagedWatch = agent.startManagedWatch(5000);
    // A CouchDB that dies is started again, with a back-off.
    const stopSupervisor = agent.startSupervisor();
    // CouchDB's log and the agent's own are capped: rotated at 10 MiB, 3 kept (src/agent/logs.ts).
    const stopLogRotation = agent.startLogRotation(30_000);
    // Continuous archiving, when switched on (src/agent/archiver.ts).
    const stopArchiver = agent.startArchiver();
    // What a `database restore` of the previous agent process left (killed mid-way): its scratch CouchDB
    // stopped and removed now, its unverified copy deleted once CouchDB answers (src/agent/scratch.ts).
    let stopping = false;
    void (async (): Promise<void> => {
      for (let i = 0; i < 120 && !stopping; i++) {
        const r = await agent.recoverRestores().catch((err: unknown) => {
          log(`database restore leftovers: ${err instanceof Error ? err.message : String(err)}`);
          return null;
        });
        if (r && r.kept.length === 0) return;
        await new Promise((res) => setTimeout(res, 5000).unref());
      }
    })();
    io.stdout.write(`couchtrove agent listening on ${server.url}\n`);
    await untilStopSignal();
    stopping = true;
    stopReplicationSync();
    stopQuotaWatch();
    stopManagedWatch();
    stopSupervisor();
    stopLogRotation();
    await stopArchiver();
    await server.close();
    log(`agent stopped${agent.couchdbPid ? ` (CouchDB pid ${agent.couchdbPid} keeps running)` : ''}`);
    return 0;
  },
});
