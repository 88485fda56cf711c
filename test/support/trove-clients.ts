// The real python-troveclient CLIs (`openstack ... database` and legacy `trove`) against a test server.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const have = (bin: string): boolean => (process.env.PATH ?? '').split(':').some((d) => fs.existsSync(path.join(d, bin)));
const missing = !have('openstack') || !have('trove');
if (missing && process.env.CI) throw new Error('python3-troveclient and python3-openstackclient are not installed (apt-get install python3-troveclient python3-openstackclient)');

/** A skip reason when the clients are missing (never under CI, where that is an error). */
export const clientsSkip: string | false = missing ? 'python3-troveclient / python3-openstackclient not installed' : false;

/**
 * What one client command costs on this machine now, ms: Python's start and the openstack plugins' import,
 * about 2 s idle and 7.5 s measured on a loaded 2-core machine, where 45 commands alone took 340 s. Measured
 * once per test file with a command that needs no server (0 when the clients are missing).
 */
export const clientPace: number = missing ? 0 : await measurePace();

async function measurePace(): Promise<number> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-pace-'));
  const t0 = Date.now();
  try {
    await new Promise<void>((resolve) => {
      execFile('openstack', ['help', 'database', 'flavor', 'list'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8' }, timeout: 300_000 }, () => resolve());
    });
    return Date.now() - t0;
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
}

/** One command's own timeout: many times its measured cost, never under 90 s. */
const commandTimeout = Math.max(90_000, 20 * clientPace);

/**
 * A test's timeout from what it waits for: `commands` client commands at three times their measured cost,
 * plus `otherMs` for everything else it waits for (instances built, backups taken: each wait bounded itself).
 */
export function clientBudget(commands: number, otherMs: number): number {
  return Math.round(commands * 3 * clientPace + otherMs);
}

/**
 * Runners for both clients. `home` is a private HOME (the clients write a cache there); `server` gives the
 * server's base URL and API endpoint once it has started.
 */
export function troveClients(home: string, server: () => { url: string; api: string }) {
  fs.mkdirSync(path.join(home, 'cache'), { recursive: true });
  const run = (cmd: string, args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(cmd, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, TROVECLIENT_UUID_CACHE_DIR: path.join(home, 'cache'), LANG: 'C.UTF-8' }, timeout: commandTimeout }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      });
    });
  const os = (...args: string[]): Promise<string> => run('openstack', ['--os-auth-type', 'none', '--os-endpoint', server().api, 'database', ...args]);
  const trove = (...args: string[]): Promise<string> =>
    run('trove', ['--os-auth-url', `${server().url}/auth`, '--os-username', 'tester', '--os-password', 'anything', '--os-project-id', 'local', '--bypass-url', server().api, ...args]);
  return { run, os, trove };
}
