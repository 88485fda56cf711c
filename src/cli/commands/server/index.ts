// `couchtrove server`: the Trove-compatible control plane, until SIGTERM/SIGINT. Instances (their
// agents and CouchDB processes) keep running when it stops; the next start adopts them.
import { defineCommand, untilStopSignal, type AnyCommand } from '../../command.js';

export const serverCommand = defineCommand({
  path: ['server'],
  summary: 'Run the Trove v1.0 API (default 127.0.0.1:8779) and its task manager',
  required: [],
  optional: ['serverPort', 'serverHost', 'publicUrl', 'stateDir', 'serverConfigFile', 'logLevel'],
  run: async (o, io) => {
    // Loaded here, not at the top: the HTTP server and SQL drivers would slow every other command's start.
    const { loadServerConfig } = await import('../../../config/server.js');
    const { startServer } = await import('../../../api/main.js');
    const overrides: { stateDir?: string; host?: string; port?: number; publicUrl?: string } = {};
    if (o.stateDir !== undefined) overrides.stateDir = o.stateDir;
    if (o.serverHost !== undefined) overrides.host = o.serverHost;
    if (o.serverPort !== undefined) overrides.port = o.serverPort;
    if (o.publicUrl !== undefined) overrides.publicUrl = o.publicUrl;
    const config = loadServerConfig({ ...(o.serverConfigFile ? { configFile: o.serverConfigFile } : {}), env: io.env, overrides });
    const { makeLogger, lineLogger } = await import('../../../util/log.js');
    const level = o.logLevel ?? 'info';
    // The agents this server starts inherit the level through the environment (src/compute/local.ts passes it on).
    if (o.logLevel !== undefined) process.env.COUCHTROVE_LOG_LEVEL = o.logLevel;
    const logger = makeLogger({ name: 'server', level, stream: io.stderr });
    const log = lineLogger(logger);
    let server: Awaited<ReturnType<typeof startServer>>;
    try {
      server = await startServer(config, { log, requestLogger: logger });
    } catch (err) {
      // The error is printed and the exit status is 1; a handle left open must not keep the process alive.
      setTimeout(() => process.exit(1), 2000).unref();
      throw err;
    }
    io.stdout.write(`couchtrove server listening on ${server.url}\n`);
    await untilStopSignal();
    log('stopping: running tasks are recovered at the next start');
    await server.close();
    // An agent call still in flight (a long backup) would keep the process alive: the work is
    // recorded as RUNNING and recovered at the next start, so do not wait for it.
    setTimeout(() => process.exit(0), 2000).unref();
    return 0;
  },
});

export const serverCommands: AnyCommand[] = [serverCommand];
