// Which CouchDB the agent's integration tests run against: a real Apache CouchDB 3.x release
// directory when COUCHDB_HOME is set, else couchtrove's development engine (devengine/release,
// express-pouchdb + pouchdb: a stand-in, see docs/agent.md). Also: free ports, private temporary
// directories, and instance settings for tests. Every test file names the engine in its suite title.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { InstanceSettings } from '../../src/agent/protocol.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface TestCouchdb {
  home: string;
  kind: 'real' | 'devengine';
  /** For suite titles: which engine the results are about. */
  label: string;
  /** Start timeout for the agent: real CouchDB starts in about 1 s, the stand-in in under 1 s; both get slack. */
  startTimeoutMs: number;
}

export function testCouchdb(): TestCouchdb {
  const env = process.env.COUCHDB_HOME;
  if (env && env.trim() !== '') {
    const home = path.resolve(env);
    if (!fs.existsSync(path.join(home, 'bin', 'couchdb'))) throw new Error(`COUCHDB_HOME=${home} has no bin/couchdb`);
    return { home, kind: 'real', label: `Apache CouchDB at ${home}`, startTimeoutMs: 60_000 };
  }
  const home = path.join(repoRoot, 'devengine', 'release');
  if (!fs.existsSync(path.join(repoRoot, 'dist', 'devengine', 'src', 'couchdb.js'))) throw new Error('the development engine is not built: run npm run build');
  return { home, kind: 'devengine', label: 'development engine (express-pouchdb stand-in; set COUCHDB_HOME for a real CouchDB)', startTimeoutMs: 30_000 };
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/**
 * A temporary directory, searchable but not listable by others (0711): instances isolated under their
 * own uids (as root) must pass through it to reach their own files.
 */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `couchtrove-${prefix}-`));
  await fsp.chmod(dir, 0o711);
  return dir;
}

export async function removeDir(dir: string): Promise<void> {
  await fsp.rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Settings for a new instance under root: its own ports, data and instance directories. */
export async function newSettings(root: string, name: string, couch: TestCouchdb, extra: Partial<InstanceSettings> = {}): Promise<InstanceSettings> {
  const port = await freePort();
  let epmdPort = await freePort();
  while (epmdPort === port) epmdPort = await freePort();
  return {
    instanceId: name,
    port,
    bindAddress: '127.0.0.1',
    dataDir: path.join(root, name, 'data'),
    instanceDir: path.join(root, name, 'instance'),
    nodeName: 'couchdb@127.0.0.1',
    epmdPort,
    couchdbHome: couch.home,
    ...extra,
  };
}

/** Kills a process group and its leader, ignoring processes already gone. */
export function killHard(pid: number | null | undefined): void {
  if (!pid) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
