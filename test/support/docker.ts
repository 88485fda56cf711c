// Private Docker daemons for the compute driver tests (scripts/docker/test-dockerd.sh): each with its own
// data root, socket, pid file and bridge under a test directory, stopped by its pid, leaving nothing.
// The guest image is built on it from the cached debootstrapped base (scripts/docker/base-image.sh).
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type Docker from 'dockerode';
import { connectDocker, followProgress } from '../../src/compute/docker/connect.js';
import { buildGuestImage, type ImageBuildResult } from '../../src/compute/docker/image.js';
import { demux } from '../../src/compute/docker/driver.js';
import { after } from 'node:test';
import { repoRoot } from './postgres.js';
import { killUnder, type RealServer } from './server.js';

const run = promisify(execFile);
const script = path.join(repoRoot, 'scripts', 'docker', 'test-dockerd.sh');

/** Why the Docker tests cannot run here, or false. */
export const dockerSkip: string | false = (() => {
  if (process.getuid?.() !== 0) return 'the Docker tests start their own dockerd: they need root';
  if (!fs.existsSync('/usr/sbin/dockerd')) return 'dockerd is not installed (apt-get install docker.io; scripts/install-test-deps.sh)';
  if (!fs.existsSync('/usr/sbin/debootstrap')) return 'debootstrap is not installed (scripts/install-test-deps.sh)';
  return false;
})();

export interface TestDaemon {
  dir: string;
  host: string;
  docker: Docker;
  stop(): Promise<void>;
}

const live = new Set<string>();
process.once('exit', () => {
  for (const dir of live) {
    try {
      execFileSync('bash', [script, 'stop', dir], { stdio: 'ignore', timeout: 30_000 });
    } catch {
      // nothing more to do
    }
  }
});

/** iptables: the daemon writes its rules (network isolation); only with netns, whose rules are its own. */
export async function startDockerd(dir: string, netns?: string, o: { iptables?: boolean } = {}): Promise<TestDaemon> {
  live.add(dir);
  const env = { ...process.env, ...(o.iptables ? { TEST_DOCKERD_IPTABLES: '1' } : {}) };
  const { stdout } = await run('bash', [script, 'start', dir, ...(netns ? [netns] : [])], { timeout: 60_000, env });
  const host = stdout.trim().split('\n').pop()!;
  const docker = connectDocker(host);
  return {
    dir, host, docker,
    stop: async () => {
      // Removing a data root with a few images takes a while on a busy machine.
      await run('bash', [script, 'stop', dir], { timeout: 600_000 });
      live.delete(dir);
    },
  };
}

const cacheDir = process.env.COUCHTROVE_TEST_CACHE ?? '/var/cache/couchtrove-test';

/**
 * What the guest image is made of here (the image build's context, the CouchDB release, this node): the
 * Dockerfile, package files and lock, and every file of bin/, dist/ (the agent) and devengine/ (their
 * contents: a build that writes the same files again keeps the key). One build then serves every test file.
 */
function guestKey(home: string | undefined): string {
  const h = createHash('sha256');
  for (const f of ['image/Dockerfile', 'package.json', 'package-lock.json']) h.update(`${f}\0`).update(fs.readFileSync(path.join(repoRoot, f)));
  h.update(`${home ?? 'devengine'}|${home ? fs.statSync(path.join(home, 'bin', 'couchdb')).mtimeMs : ''}|${process.execPath}|${process.version}`);
  const walk = (rel: string): void => {
    const full = path.join(repoRoot, rel);
    const st = fs.lstatSync(full);
    if (st.isDirectory()) {
      for (const c of fs.readdirSync(full).sort()) if (rel !== 'dist' || (c !== 'test' && c !== 'bench')) walk(path.join(rel, c));
    } else {
      h.update(`${rel}\0`).update(fs.readFileSync(full));
    }
  };
  for (const d of ['bin', 'dist', 'devengine']) walk(d);
  return h.digest('hex').slice(0, 16);
}

/**
 * The guest image under `tag`: loaded from the test cache (`docker save` of an earlier build of the same
 * package in this run: guestKey) or built, then saved there for the next test file. Test files build it one
 * at a time (a lock file): the second one waits for the first one's image rather than building it again.
 */
export async function buildTestImage(docker: Docker, tag: string, log: (l: string) => void = () => undefined): Promise<ImageBuildResult & { baseSeconds: number; cached: boolean }> {
  const t0 = Date.now();
  const home = process.env.COUCHDB_HOME;
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const key = guestKey(home);
  const saved = path.join(cacheDir, `guest-${key}.tar`);
  const lock = `${saved}.lock`;
  for (let waited = 0; !fs.existsSync(saved); waited++) {
    try {
      fs.closeSync(fs.openSync(lock, 'wx'));
    } catch {
      // Another test file builds it: its image is taken once saved (a lock older than 15 minutes is a dead one's).
      const held = fs.statSync(lock, { throwIfNoEntry: false });
      if (waited > 1800 || (held && Date.now() - held.mtimeMs > 900_000)) fs.rmSync(lock, { force: true });
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    try {
      const built = await buildFresh(docker, tag, home, log);
      const tmp = `${saved}.${process.pid}`;
      await pipeline(await docker.getImage(tag).get(), fs.createWriteStream(tmp, { mode: 0o600 }));
      fs.renameSync(tmp, saved);
      // Images of older builds go (a day: a run of another checkout on this machine may still load its own).
      for (const f of fs.readdirSync(cacheDir)) {
        const p = path.join(cacheDir, f);
        if (/^guest-[0-9a-f]{16}\.tar$/.test(f) && p !== saved && Date.now() - fs.statSync(p).mtimeMs > 86_400_000) fs.rmSync(p, { force: true });
      }
      return { ...built, seconds: (Date.now() - t0) / 1000, cached: false };
    } finally {
      fs.rmSync(lock, { force: true });
    }
  }
  const loaded = await followProgress(docker, await docker.loadImage(fs.createReadStream(saved)));
  const ref = loaded.map((e) => /^Loaded image(?: ID)?: (\S+)/.exec(e.stream ?? '')?.[1]).find((x) => x !== undefined);
  if (!ref) throw new Error(`docker load of ${saved} named no image`);
  const img = docker.getImage(ref);
  const [repo, t] = tag.split(':') as [string, string | undefined];
  await img.tag({ repo, tag: t ?? 'latest' });
  const info = await docker.getImage(tag).inspect();
  const engine = info.Config.Labels?.['org.couchtrove.engine'] === 'devengine' ? 'devengine' : 'couchdb';
  return { tag, id: info.Id, engine, seconds: (Date.now() - t0) / 1000, baseSeconds: 0, cached: true };
}

/** Imports the cached base (built once by scripts/docker/base-image.sh) and builds the guest image. */
async function buildFresh(docker: Docker, tag: string, home: string | undefined, log: (l: string) => void): Promise<ImageBuildResult & { baseSeconds: number }> {
  const t0 = Date.now();
  const { stdout } = await run('bash', [path.join(repoRoot, 'scripts', 'docker', 'base-image.sh')], { timeout: 600_000, maxBuffer: 1 << 24 });
  const tar = stdout.trim().split('\n').pop()!;
  await followProgress(docker, await docker.importImage(fs.createReadStream(tar), { repo: 'couchtrove-base', tag: 'bookworm' }));
  const baseSeconds = (Date.now() - t0) / 1000;
  const r = await buildGuestImage(docker, { tag, base: 'couchtrove-base:bookworm', ...(home ? { couchdbHome: home } : {}), log });
  return { ...r, baseSeconds };
}

/** Runs a command in a container as user: its exit code and output. */
export async function execIn(docker: Docker, container: string, user: string, cmd: string[]): Promise<{ code: number; out: string }> {
  const ex = await docker.getContainer(container).exec({ Cmd: cmd, User: user, AttachStdout: true, AttachStderr: true });
  const stream = await ex.start({});
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve) => {
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('end', () => resolve());
    stream.on('close', () => resolve());
  });
  return { code: (await ex.inspect()).ExitCode ?? -1, out: demux(Buffer.concat(chunks)) };
}

/** Whether a TCP connection from inside a container, as user, to host:port succeeds (within 3 s). */
export async function connectsFrom(docker: Docker, container: string, user: string, host: string, port: number): Promise<boolean> {
  const js = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port}});s.setTimeout(3000);s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1));s.on('timeout',()=>process.exit(2))`;
  return (await execIn(docker, container, user, ['/usr/local/bin/node', '-e', js])).code === 0;
}

export interface TestSwarm {
  daemons: TestDaemon[];
  /** Each daemon's swarm node id, in the same order. */
  nodeIds: string[];
  /** The server's environment for compute_driver = swarm on this swarm. */
  env: Record<string, string>;
  /** Leaves the swarm and stops every daemon still running, then removes the namespaces and the bridge. */
  stop(): Promise<void>;
}

/**
 * A swarm of `count` dockerd on this machine (docs/compute.md, the swarm test): each in a network namespace of
 * its own (scripts/docker/netns.sh, `<prefix>.<n+1>` on the test's bridge `ctb<tag>`, the host `<prefix>.1`),
 * writing its iptables rules there; the guest image built on the first (the manager) and loaded into the
 * others (the workers). `stop` is safe after a partial start and with daemons stopped by the test.
 */
export async function startSwarm(root: string, count: number, tag: string, prefix: string, image: string): Promise<TestSwarm> {
  const netns = path.join(repoRoot, 'scripts', 'docker', 'netns.sh');
  const daemons: TestDaemon[] = [];
  const nodeIds: string[] = [];
  const added: string[] = [];
  execFileSync('bash', [netns, 'up', tag, prefix]);
  const stop = async (): Promise<void> => {
    try {
      for (const d of [...daemons].reverse()) {
        if (!fs.existsSync(d.dir)) continue;
        await d.docker.swarmLeave({ force: true }).catch(() => undefined);
        await d.stop();
      }
    } finally {
      execFileSync('bash', [netns, 'down', tag, ...added]);
    }
  };
  try {
    for (let n = 1; n <= count; n++) {
      const ns = execFileSync('bash', [netns, 'add', tag, String(n), prefix]).toString().trim();
      added.push(String(n));
      daemons.push(await startDockerd(path.join(root, `dockerd-${n}`), ns, { iptables: true }));
    }
    const [d1, ...workers] = daemons as [TestDaemon, ...TestDaemon[]];
    const built = await buildTestImage(d1.docker, image);
    const t0 = Date.now();
    for (const w of workers) await followProgress(w.docker, await w.docker.loadImage(await d1.docker.getImage(image).get()));
    console.log(`guest image ${built.tag} (${built.engine}) ${built.cached ? 'loaded from the test cache' : 'built'} in ${built.seconds.toFixed(1)} s, copied to ${workers.length} more nodes in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await d1.docker.swarmInit({ ListenAddr: `${prefix}.2:2377`, AdvertiseAddr: `${prefix}.2` });
    const tokens = ((await d1.docker.swarmInspect()) as { JoinTokens: { Worker: string } }).JoinTokens;
    for (const [i, w] of workers.entries()) {
      await w.docker.swarmJoin({ ListenAddr: `${prefix}.${i + 3}:2377`, AdvertiseAddr: `${prefix}.${i + 3}`, RemoteAddrs: [`${prefix}.2:2377`], JoinToken: tokens.Worker });
    }
    for (const d of daemons) nodeIds.push(((await d.docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID);
    const end = Date.now() + 60_000;
    while (((await d1.docker.listNodes()) as Array<{ Status: { State: string } }>).filter((n) => n.Status.State === 'ready').length < count) {
      if (Date.now() > end) throw new Error(`not all ${count} swarm nodes became ready`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const env = {
      COUCHTROVE_COMPUTE_DRIVER: 'swarm', COUCHTROVE_DOCKER_HOST: d1.host, COUCHTROVE_DOCKER_IMAGE: image, COUCHTROVE_HEALTH_INTERVAL: '1',
      COUCHTROVE_SWARM_NODE_HOSTS: daemons.map((d, i) => `${nodeIds[i]}=${d.host}`).join(','),
    };
    return { daemons, nodeIds, env, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

export interface TestDockerHost {
  daemon: TestDaemon;
  /** The daemon's address on the test's bridge, where instances' ports are published; the host is `<prefix>.1`. */
  publish: string;
  /** The server's environment for compute_driver = docker on this daemon. */
  env: Record<string, string>;
  /** Removes whatever a test left on the daemon, stops it, then removes the namespace and the bridge. */
  stop(): Promise<void>;
}

/**
 * One dockerd for the docker driver's tests, in a network namespace of its own (`<prefix>.2` on the test's bridge
 * `ctb<tag>`), where it writes iptables rules (Docker's isolation of networks, as in production) without touching
 * the host's; the guest image on it (buildTestImage); instances' ports from `ports` (the namespace's ports are
 * free whatever the host uses, so a range needs no probing).
 */
export async function startDockerHost(root: string, tag: string, prefix: string, image: string, ports: string): Promise<TestDockerHost> {
  const netns = path.join(repoRoot, 'scripts', 'docker', 'netns.sh');
  execFileSync('bash', [netns, 'up', tag, prefix]);
  let daemon: TestDaemon | undefined;
  const stop = async (): Promise<void> => {
    try {
      if (daemon) {
        // Whatever a failed test left: the daemon's stop removes its whole data root anyway.
        for (const c of await daemon.docker.listContainers({ all: true }).catch(() => [])) await daemon.docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
        // Their networks' bridges live in the namespace: removed through the daemon.
        for (const n of await daemon.docker.listNetworks().catch(() => [])) if (n.Name.startsWith('couchtrove-')) await daemon.docker.getNetwork(n.Id).remove().catch(() => undefined);
        await daemon.stop();
        if (fs.existsSync(daemon.dir)) throw new Error(`the test dockerd left its directory ${daemon.dir}`);
      }
    } finally {
      execFileSync('bash', [netns, 'down', tag, '1']);
    }
  };
  try {
    const ns = execFileSync('bash', [netns, 'add', tag, '1', prefix]).toString().trim();
    daemon = await startDockerd(path.join(root, 'dockerd'), ns, { iptables: true });
    const built = await buildTestImage(daemon.docker, image);
    console.log(`guest image ${built.tag} (${built.engine}): ${built.cached ? 'loaded from the test cache' : `base imported in ${built.baseSeconds.toFixed(1)} s, built`} in ${built.seconds.toFixed(1)} s`);
    const publish = `${prefix}.2`;
    const env = {
      COUCHTROVE_COMPUTE_DRIVER: 'docker', COUCHTROVE_DOCKER_HOST: daemon.host, COUCHTROVE_DOCKER_IMAGE: image, COUCHTROVE_HEALTH_INTERVAL: '1',
      COUCHTROVE_DOCKER_PUBLISH_ADDRESS: publish, COUCHTROVE_COUCHDB_TCP_PORTS: ports,
    };
    return { daemon, publish, env, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** After a docker or swarm test file: its server, then its daemons, then whatever still runs under root, and root. */
export function tearDownAfter(root: string, parts: () => { server?: RealServer; host?: { stop(): Promise<void> } }): void {
  after(async () => {
    const { server, host } = parts();
    await server?.kill('SIGKILL');
    try {
      await host?.stop();
    } finally {
      killUnder(root);
      fs.rmSync(root, { recursive: true, force: true });
    }
  }, { timeout: 900_000 });
}
