// Starts a real OpenStack Swift all-in-one (scripts/swift/swift-aio.sh) for one test file and stops it after.
// Each instance gets its own directory and free ports, so test files may run concurrently. The processes are
// stopped by stop(), by a process 'exit' hook, and, should this process be killed outright, by the script's
// watchdog (--owner-pid).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const script = path.join(repoRoot, 'scripts', 'swift', 'swift-aio.sh');

export type SwiftService = 'proxy' | 'account' | 'container' | 'object' | 'memcached';

export interface SwiftServer {
  dir: string;
  authUrl: string;
  user: string;
  key: string;
  s3Endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  maxFileSize: number;
  ports: Record<SwiftService, number>;
  /** Variables for swift:// (auth v1). */
  swiftEnv(): NodeJS.ProcessEnv;
  /** Variables for s3:// through s3api. */
  s3Env(): NodeJS.ProcessEnv;
  /** SIGKILL one service. */
  kill(service: SwiftService): Promise<void>;
  /** Start a killed service again on its port. */
  start(service: SwiftService): Promise<void>;
  restart(service: SwiftService): Promise<void>;
  stop(): Promise<void>;
}

/** Whether the Debian packages are installed (scripts/install-test-deps.sh). */
export function swiftAvailable(): boolean {
  return ['/usr/bin/swift-proxy-server', '/usr/bin/swift-object-server', '/usr/bin/memcached'].every((p) => existsSync(p));
}

const running = new Set<string>();
let hooked = false;

function stopSync(dir: string): void {
  try {
    execFileSync('bash', [script, 'stop', dir], { stdio: 'ignore', timeout: 20_000 });
  } catch {
    // The watchdog will finish the job.
  }
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const dir of running) stopSync(dir);
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const dir of running) stopSync(dir);
      process.exit(130);
    });
  }
}

export interface StartOptions {
  /** Swift's max_file_size: single PUTs above it get 413 (default 6 MiB, so segmentation is proven). */
  maxFileSize?: number;
  /** Where the proxy listens: 127.0.0.1 (default) or 0.0.0.0 (containers reach it through a host address). */
  proxyIp?: '127.0.0.1' | '0.0.0.0';
}

export async function startSwift(options: StartOptions = {}): Promise<SwiftServer> {
  if (!swiftAvailable()) throw new Error('OpenStack Swift is not installed: run scripts/install-test-deps.sh');
  const parent = mkdtempSync(path.join(tmpdir(), 'couchtrove-swift-'));
  const dir = path.join(parent, 'aio');
  hookExit();
  running.add(dir);
  try {
    await run('bash', [script, 'start', dir, '--max-file-size', String(options.maxFileSize ?? 6 * 1024 * 1024), '--owner-pid', String(process.pid), '--proxy-ip', options.proxyIp ?? '127.0.0.1'], {
      timeout: 120_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    stopSync(dir);
    running.delete(dir);
    rmSync(parent, { recursive: true, force: true });
    throw new Error(`could not start Swift: ${e.stderr || e.message}`);
  }
  const info = JSON.parse(readFileSync(path.join(dir, 'swift.json'), 'utf8')) as Omit<SwiftServer, 'swiftEnv' | 's3Env' | 'kill' | 'start' | 'restart' | 'stop'>;
  const ctl = async (cmd: string, service: SwiftService): Promise<void> => {
    await run('bash', [script, cmd, dir, service], { timeout: 60_000 });
  };
  return {
    ...info,
    swiftEnv: () => ({ ST_AUTH: info.authUrl, ST_USER: info.user, ST_KEY: info.key }),
    s3Env: () => ({
      AWS_ENDPOINT_URL: info.s3Endpoint,
      AWS_REGION: info.region,
      AWS_ACCESS_KEY_ID: info.accessKeyId,
      AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
      COUCHTROVE_S3_FORCE_PATH_STYLE: 'true',
    }),
    kill: (service) => ctl('kill', service),
    start: (service) => ctl('start-service', service),
    restart: (service) => ctl('restart', service),
    stop: async () => {
      if (!running.has(dir)) return;
      running.delete(dir);
      await run('bash', [script, 'stop', dir], { timeout: 30_000 }).catch(() => stopSync(dir));
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

/** Names in a container, straight from Swift's API (segments included): to prove nothing is left behind. */
export async function rawSwiftNames(server: Pick<SwiftServer, 'authUrl' | 'user' | 'key'>, container: string, prefix = ''): Promise<string[]> {
  const auth = await fetch(server.authUrl, { headers: { 'X-Auth-User': server.user, 'X-Auth-Key': server.key } });
  await auth.body?.cancel();
  const storage = auth.headers.get('x-storage-url');
  const token = auth.headers.get('x-auth-token');
  if (!auth.ok || !storage || !token) throw new Error(`tempauth failed: HTTP ${auth.status}`);
  const names: string[] = [];
  let marker = '';
  while (true) {
    const q = new URLSearchParams({ format: 'json', prefix, limit: '10000', ...(marker ? { marker } : {}) });
    const res = await fetch(`${storage}/${encodeURIComponent(container)}?${q}`, { headers: { 'X-Auth-Token': token } });
    if (res.status === 404) {
      await res.body?.cancel();
      return names;
    }
    if (!res.ok) throw new Error(`listing ${container}: HTTP ${res.status}`);
    const page = (await res.json()) as { name: string }[];
    names.push(...page.map((p) => p.name));
    if (page.length < 10000) return names;
    marker = page[page.length - 1]!.name;
  }
}
