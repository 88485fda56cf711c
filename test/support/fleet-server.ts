// One control-plane process on simulated agents (./sim-agent.ts), for the multi-process fault test and the
// fleet benchmark: `node dist/test/support/fleet-server.js` with COUCHTROVE_DATABASE_URL (PostgreSQL),
// SIM_URL (the simulated agents) and STATE_DIR; the usual COUCHTROVE_* variables configure the rest. It
// prints one JSON line {"url", "owner", "pid"} on stdout once it serves, and stops on SIGTERM.
import { loadServerConfig } from '../../src/config/server.js';
import { startServer } from '../../src/api/main.js';
import { SimCompute, simBackupEngine } from './sim-agent.js';

const sim = process.env.SIM_URL;
const stateDir = process.env.STATE_DIR;
if (!sim || !stateDir || !process.env.COUCHTROVE_DATABASE_URL) {
  process.stderr.write('fleet-server: set SIM_URL, STATE_DIR and COUCHTROVE_DATABASE_URL\n');
  process.exit(2);
}
const config = loadServerConfig({ env: { COUCHTROVE_BACKUP_ENCRYPTION: 'false', ...process.env }, overrides: { stateDir, port: Number(process.env.PORT ?? 0), host: '127.0.0.1' } });
const tick = process.env.SCHEDULE_TICK_MS;
const server = await startServer(config, {
  compute: new SimCompute(sim, `${stateDir}/sim`),
  backups: simBackupEngine(sim),
  ...(tick ? { scheduleTickMs: Number(tick) } : {}),
  log: (l) => process.stderr.write(`${new Date().toISOString()} [${process.pid}] ${l}\n`),
});
process.stdout.write(`${JSON.stringify({ url: server.url, owner: server.plane.tasks.owner, pid: process.pid })}\n`);
const stop = (): void => {
  void server.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
