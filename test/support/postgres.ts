// A private PostgreSQL for tests, started with the project's scripts/postgres/start.sh (Debian's
// `postgresql` package) on a free loopback port and stopped (and its directory removed) by stop().
// Where PostgreSQL is not installed the suites are skipped, except under CI=true where that is an error.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export interface PostgresServer {
  url: string;
  dir: string;
  stop(): Promise<void>;
}

export function postgresAvailable(): boolean {
  if (process.env.PG_BIN) return fs.existsSync(path.join(process.env.PG_BIN, 'initdb'));
  try {
    return fs.readdirSync('/usr/lib/postgresql').some((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
  } catch {
    return false;
  }
}

/** Why PostgreSQL tests are skipped, or false to run them. Throws under CI when PostgreSQL is missing. */
export function skipPostgres(): string | false {
  if (postgresAvailable()) return false;
  if (process.env.CI) throw new Error('PostgreSQL is not installed (apt-get install postgresql): CI runs the state and task tests on it');
  return 'PostgreSQL not installed (apt-get install postgresql)';
}

export async function startPostgres(): Promise<PostgresServer> {
  // Directly under the temp dir: as root the server runs as user postgres, which must reach it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-pg-'));
  const { stdout } = await run('bash', [path.join(repoRoot, 'scripts/postgres/start.sh'), dir], { timeout: 90_000 });
  const url = stdout.trim().split('\n').pop() ?? '';
  if (!url.startsWith('postgres://')) throw new Error(`start.sh printed no URL: ${stdout}`);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await run('bash', [path.join(repoRoot, 'scripts/postgres/stop.sh'), dir], { timeout: 60_000 });
  };
  return { url, dir, stop };
}
