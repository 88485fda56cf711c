// Private Docker daemons for the compute driver tests (scripts/docker/test-dockerd.sh): each with its own
// data root, socket, pid file and bridge under a test directory, stopped by its pid, leaving nothing.
// The guest image is built on it from the cached debootstrapped base (scripts/docker/base-image.sh).
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { connectDocker, followProgress } from '../../src/compute/docker/connect.js';
import { buildGuestImage, type ImageBuildResult } from '../../src/compute/docker/image.js';
import { demux } from '../../src/compute/docker/driver.js';
import { repoRoot } from './postgres.js';

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

/** Imports the cached base (built once by scripts/docker/base-image.sh) and builds the guest image. */
export async function buildTestImage(docker: Docker, tag: string, log: (l: string) => void = () => undefined): Promise<ImageBuildResult & { baseSeconds: number }> {
  const t0 = Date.now();
  const { stdout } = await run('bash', [path.join(repoRoot, 'scripts', 'docker', 'base-image.sh')], { timeout: 600_000, maxBuffer: 1 << 24 });
  const tar = stdout.trim().split('\n').pop()!;
  await followProgress(docker, await docker.importImage(fs.createReadStream(tar), { repo: 'couchtrove-base', tag: 'bookworm' }));
  const baseSeconds = (Date.now() - t0) / 1000;
  const home = process.env.COUCHDB_HOME;
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
