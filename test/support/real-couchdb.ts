// Starting a real Apache CouchDB 3.x from its release directory (COUCHDB_HOME) on a given data
// directory, as couchdb-3.md describes: its own local.ini and vm.args, its own Erlang port mapper,
// loopback only. For tests that must also run against the real server.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { existsSync, openSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './couchdb.js';

export interface RealCouchdb {
  url: string;
  port: number;
  dir: string;
  auth: string;
  stop(): Promise<void>;
}

export const ADMIN = { username: 'admin', password: 'backup-test-secret' };

export async function startRealCouchdb(home: string, dataDir: string, dir: string): Promise<RealCouchdb> {
  await fs.mkdir(dataDir, { recursive: true });
  await fs.mkdir(dir, { recursive: true });
  const port = await freePort();
  const epmdPort = await freePort();
  const ini = path.join(dir, 'local.ini');
  await fs.writeFile(
    ini,
    [
      '[couchdb]',
      `database_dir = ${dataDir}`,
      `view_index_dir = ${dataDir}`,
      `uuid = ${randomBytes(16).toString('hex')}`,
      'single_node = true',
      '[chttpd]',
      `port = ${port}`,
      'bind_address = 127.0.0.1',
      '[smoosh]',
      `state_dir = ${path.join(dir, 'smoosh')}`,
      '[log]',
      'writer = file',
      `file = ${path.join(dir, 'couchdb.log')}`,
      '[admins]',
      `${ADMIN.username} = ${ADMIN.password}`,
      '',
    ].join('\n'),
  );
  const stockArgs = await fs.readFile(path.join(home, 'etc', 'vm.args'), 'utf8').catch(() => '');
  const args = stockArgs
    .split('\n')
    .filter((l) => !/^\s*-(s?name|setcookie)\b/.test(l))
    .concat(['-name couchdb@127.0.0.1', `-setcookie ${randomBytes(12).toString('hex')}`, '-kernel inet_dist_use_interface {127,0,0,1}', ''])
    .join('\n');
  await fs.writeFile(path.join(dir, 'vm.args'), args);
  const out = openSync(path.join(dir, 'stdout.log'), 'a');
  const env = {
    ...process.env,
    COUCHDB_INI_FILES: `${path.join(home, 'etc', 'default.ini')} ${ini}`,
    COUCHDB_ARGS_FILE: path.join(dir, 'vm.args'),
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
  };
  const child: ChildProcess = spawn(path.join(home, 'bin', 'couchdb'), [], { env, detached: true, stdio: ['ignore', out, out] });
  const url = `http://127.0.0.1:${port}`;
  const auth = `Basic ${Buffer.from(`${ADMIN.username}:${ADMIN.password}`).toString('base64')}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`CouchDB exited with ${child.exitCode} during start; see ${dir}/stdout.log`);
    const ok = await fetch(`${url}/_up`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`CouchDB did not answer /_up within 60 s; see ${dir}`);
    await sleep(250);
  }
  return {
    url,
    port,
    dir,
    auth,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const exited = new Promise((r) => child.once('exit', r));
        if (!(await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]))) process.kill(-child.pid!, 'SIGKILL');
      }
      // The Erlang port mapper outlives the node: stop this server's own.
      const erts = readdirSync(home).find((n) => n.startsWith('erts-'));
      const epmd = erts ? path.join(home, erts, 'bin', 'epmd') : 'epmd';
      if (!erts || existsSync(epmd)) spawnSync(epmd, ['-port', String(epmdPort), '-kill'], { stdio: 'ignore' });
    },
  };
}

export async function couch(server: { url: string; auth: string }, method: string, p: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${server.url}${p}`, {
    method,
    headers: { authorization: server.auth, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}
