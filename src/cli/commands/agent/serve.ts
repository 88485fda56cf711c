// `couchtrove agent serve --config FILE`: the agent's RPC for the control plane, until SIGTERM/SIGINT.
// CouchDB is left running when the agent stops; the next agent process adopts it.
import { defineCommand } from '../../command.js';

export const serveCommand = defineCommand({
  path: ['agent', 'serve'],
  summary: 'Serve the agent RPC (bearer token from the file named in the config) until SIGTERM',
  required: ['agentConfig'],
  optional: [],
  run: async (o, io) => {
    // Loaded here, not at the top: every other command would pay for the HTTP server's start-up.
    const { Agent } = await import('../../../agent/agent.js');
    const { readServeConfig, readTokenFile, startAgentServer } = await import('../../../agent/server.js');
    const cfg = await readServeConfig(o.agentConfig);
    const token = await readTokenFile(cfg.tokenFile);
    const log = (line: string) => io.stderr.write(`${new Date().toISOString()} ${line}\n`);
    const agent = await Agent.open(cfg.instanceDir, { log });
    const server = await startAgentServer({ host: cfg.host, port: cfg.port, token, agent, log });
    // Replicas reconcile their replication (new/deleted databases, _security) every few seconds.
    const stopReplicationSync = agent.startReplicationSync(5000);
    // Client writes beyond the volume quota are refused (src/agent/quota.ts).
    const stopQuotaWatch = agent.startQuotaWatch(10_000);
    // A CouchDB that dies is started again, with a back-off.
    const stopSupervisor = agent.startSupervisor();
    // Continuous archiving, when switched on (src/agent/archiver.ts).
    const stopArchiver = agent.startArchiver();
    io.stdout.write(`couchtrove agent listening on ${server.url}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        resolve();
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
    stopReplicationSync();
    stopQuotaWatch();
    stopSupervisor();
    await stopArchiver();
    await server.close();
    log(`agent stopped${agent.couchdbPid ? ` (CouchDB pid ${agent.couchdbPid} keeps running)` : ''}`);
    return 0;
  },
});
