// A repository's credentials for an agent that does not share the control plane's environment (one in a
// container or a Swarm task): the storage driver's own variables (docs/storage.md), picked from the control
// plane's environment by the repository's scheme, given to the agent as a root-owned 0400 JSON file, never in
// its environment or command line. The agent reads the file at each open of the repository (openStorage), so
// a new copy takes effect without a restart.
import * as fsp from 'node:fs/promises';
import { isIP } from 'node:net';
import { StorageError } from './backend.js';
import { isLoopback } from '../util/net.js';

/** The variables each object store's driver reads (swift/auth.ts, swift/swift.ts, s3/s3.ts). */
export const STORAGE_VARIABLES: Readonly<Record<string, readonly string[]>> = {
  'swift:': [
    'ST_AUTH', 'ST_USER', 'ST_KEY', 'OS_STORAGE_URL', 'OS_AUTH_TOKEN', 'OS_AUTH_URL', 'OS_USERNAME', 'OS_USER_ID', 'OS_PASSWORD',
    'OS_PROJECT_NAME', 'OS_PROJECT_ID', 'OS_TENANT_NAME', 'OS_TENANT_ID', 'OS_USER_DOMAIN_NAME', 'OS_USER_DOMAIN_ID',
    'OS_PROJECT_DOMAIN_NAME', 'OS_PROJECT_DOMAIN_ID', 'OS_DEFAULT_DOMAIN', 'OS_DEFAULT_DOMAIN_ID', 'OS_DEFAULT_DOMAIN_NAME',
    'OS_REGION_NAME', 'OS_INTERFACE', 'OS_ENDPOINT_TYPE', 'OS_APPLICATION_CREDENTIAL_ID', 'OS_APPLICATION_CREDENTIAL_SECRET',
    'COUCHTROVE_SWIFT_SEGMENT_SIZE', 'COUCHTROVE_SWIFT_CONCURRENCY',
  ],
  's3:': [
    'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN', 'AWS_MAX_ATTEMPTS', 'COUCHTROVE_S3_FORCE_PATH_STYLE', 'COUCHTROVE_S3_PART_SIZE',
  ],
};

/** The variables that name where the object store is: the ones a container may need to reach elsewhere. */
export const ENDPOINT_VARIABLES: readonly string[] = ['ST_AUTH', 'OS_AUTH_URL', 'OS_STORAGE_URL', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3'];

const ALL = new Set(Object.values(STORAGE_VARIABLES).flat());

function schemeOf(repository: string): string {
  try {
    return new URL(repository).protocol;
  } catch {
    throw new StorageError(`invalid storage URL ${JSON.stringify(repository)}`);
  }
}

/**
 * What an agent away from the control plane needs for `repository`: its scheme's variables as this
 * environment has them, null for a file:// repository (mounted, no credentials). An endpoint on a loopback
 * address is rewritten to `address` (docker_storage_address), as the agent cannot reach this host's
 * loopback; without one, refused with the variable and the setting named.
 */
export function repositoryCredentials(repository: string, env: NodeJS.ProcessEnv, address?: string): Record<string, string> | null {
  const names = STORAGE_VARIABLES[schemeOf(repository)];
  if (!names) return null;
  const out: Record<string, string> = {};
  for (const k of names) {
    const v = env[k];
    if (v === undefined || v === '') continue;
    out[k] = ENDPOINT_VARIABLES.includes(k) ? reachable(k, v, address) : v;
  }
  return out;
}

function reachable(name: string, value: string, address: string | undefined): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new StorageError(`${name} is not a URL`);
  }
  if (!isLoopback(u.hostname)) return value;
  if (!address) {
    throw new StorageError(`${name} names ${u.hostname}, which an instance's container cannot reach: set docker_storage_address to an address of this host that containers reach (docs/compute.md)`);
  }
  u.hostname = isIP(address) === 6 ? `[${address}]` : address;
  return u.toString();
}

/**
 * The variables in a credentials file: a JSON object of the storage drivers' variable names to strings,
 * in a file nobody but its owner may read (0600 or narrower). Anything else is refused, naming the file.
 */
export async function readCredentialsFile(file: string): Promise<Record<string, string>> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StorageError(code === 'ENOENT' ? `the repository's credentials ${file} are missing (the control plane copies them in when it makes the container)` : `cannot read the repository's credentials ${file}: ${code ?? String(err)}`);
  }
  if ((st.mode & 0o077) !== 0) throw new StorageError(`the repository's credentials ${file} are readable by others (mode ${(st.mode & 0o777).toString(8)})`);
  let raw: unknown;
  try {
    raw = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch {
    throw new StorageError(`the repository's credentials ${file} are not JSON`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new StorageError(`the repository's credentials ${file} must be a JSON object`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!ALL.has(k)) throw new StorageError(`the repository's credentials ${file}: ${JSON.stringify(k)} is not a storage variable`);
    if (typeof v !== 'string') throw new StorageError(`the repository's credentials ${file}: ${k} must be a string`);
    out[k] = v;
  }
  return out;
}

let credentialsFile: string | undefined;

/** `agent serve` in a container: object stores are opened with the variables of this file (see openStorage). */
export function useCredentialsFile(file: string | undefined): void {
  credentialsFile = file;
}

/** The environment a repository is opened with by default: this process's, with the credentials file's variables over it. */
export async function storageEnv(url: string): Promise<NodeJS.ProcessEnv> {
  if (!credentialsFile || !STORAGE_VARIABLES[schemeOf(url)]) return process.env;
  return { ...process.env, ...(await readCredentialsFile(credentialsFile)) };
}
