// Input checks shared by the agent's RPC, its commands and its CouchDB calls. Each throws an
// INVALID_ARGUMENT AgentError naming the value and the rule, before anything is changed.
import * as path from 'node:path';
import { isIP } from 'node:net';
import { invalid } from './errors.js';
import type { InstanceSettings } from './protocol.js';

/** CouchDB's rule for database names (CouchDB 3.x, "Only lowercase characters ..."). */
export const DATABASE_NAME_RE = /^[a-z][a-z0-9_$()+/-]*$/;
const DATABASE_NAME_MAX = 238;

/** Server admin the agent creates for itself, and the one `root enable` manages. */
export const AGENT_ADMIN = 'couchtrove';
export const ROOT_USER = 'root';

const USER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const ROLE_RE = /^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,127}$/;

export function checkDatabaseName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw invalid('database name must be a non-empty string');
  if (name.length > DATABASE_NAME_MAX) throw invalid(`database name ${JSON.stringify(name.slice(0, 40))}... is longer than ${DATABASE_NAME_MAX} characters`);
  if (!DATABASE_NAME_RE.test(name)) {
    throw invalid(
      `invalid database name ${JSON.stringify(name)}: it must begin with a lowercase letter (a-z) and hold only lowercase letters, digits and _ $ ( ) + - /`,
    );
  }
  return name;
}

export function checkUserName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw invalid('user name must be a non-empty string');
  if (!USER_NAME_RE.test(name)) {
    throw invalid(`invalid user name ${JSON.stringify(name)}: 1-128 characters, letters, digits and . _ @ + -, beginning with a letter or digit`);
  }
  if (name === ROOT_USER || name === AGENT_ADMIN) throw invalid(`user name ${JSON.stringify(name)} is reserved for a server admin`);
  return name;
}

export function checkRoles(roles: unknown): string[] {
  if (roles === undefined) return [];
  if (!Array.isArray(roles)) throw invalid('roles must be a list of strings');
  for (const r of roles) {
    if (typeof r !== 'string' || !ROLE_RE.test(r)) {
      throw invalid(`invalid role ${JSON.stringify(r)}: 1-128 characters, letters, digits and . _ @ + : -, not beginning with '_' (roles beginning with '_' are CouchDB's)`);
    }
  }
  return [...new Set(roles as string[])];
}

export function checkPassword(password: unknown, what = 'password'): string {
  if (typeof password !== 'string' || password === '') throw invalid(`${what} must be a non-empty string`);
  if (password.length > 1024) throw invalid(`${what} is longer than 1024 characters`);
  if (/[\0\r\n]/.test(password)) throw invalid(`${what} must not contain NUL or line breaks`);
  return password;
}

export function checkDatabaseList(dbs: unknown, what = 'databases'): string[] {
  if (dbs === undefined) return [];
  if (!Array.isArray(dbs)) throw invalid(`${what} must be a list of database names`);
  return [...new Set(dbs.map((d) => checkDatabaseName(d)))];
}

/** A backup repository URL, without credentials (they come from the environment). */
export function checkStorageUrl(url: unknown): string {
  if (typeof url !== 'string' || url === '') throw invalid('storage must be a repository URL such as file:///path, swift://container/prefix or s3://bucket/prefix');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(`storage ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.username || parsed.password) throw invalid('storage URL must not hold credentials (they come from the environment)');
  return url;
}

export function checkBackupId(id: unknown, what = 'backup id'): string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id)) {
    throw invalid(`invalid ${what} ${JSON.stringify(id)} (letters, digits, '.', '_', '-'; at most 128)`);
  }
  return id;
}

const int = (v: unknown, min: number, max: number, what: string): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(`${what} must be a whole number between ${min} and ${max}, got ${JSON.stringify(v)}`);
  return v;
};

const absPath = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || !path.isAbsolute(v)) throw invalid(`${what} must be an absolute path, got ${JSON.stringify(v)}`);
  return path.resolve(v);
};

/** Checks every field of the instance settings; returns a normalised copy. */
export function checkSettings(s: unknown): InstanceSettings {
  if (!s || typeof s !== 'object' || Array.isArray(s)) throw invalid('instance settings must be a JSON object');
  const o = s as Record<string, unknown>;
  if (typeof o.instanceId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(o.instanceId)) {
    throw invalid(`invalid instanceId ${JSON.stringify(o.instanceId)}`);
  }
  const port = int(o.port, 1, 65535, 'port');
  const epmdPort = int(o.epmdPort, 1, 65535, 'epmdPort');
  if (port === epmdPort) throw invalid('port and epmdPort must differ');
  if (typeof o.bindAddress !== 'string' || (isIP(o.bindAddress) === 0 && o.bindAddress !== 'any')) {
    throw invalid(`bindAddress must be an IP address, got ${JSON.stringify(o.bindAddress)}`);
  }
  const dataDir = absPath(o.dataDir, 'dataDir');
  const instanceDir = absPath(o.instanceDir, 'instanceDir');
  const couchdbHome = absPath(o.couchdbHome, 'couchdbHome');
  if (dataDir === instanceDir || dataDir.startsWith(`${instanceDir}${path.sep}`) || instanceDir.startsWith(`${dataDir}${path.sep}`)) {
    throw invalid('dataDir and instanceDir must be separate directories (neither inside the other)');
  }
  if (typeof o.nodeName !== 'string' || !/^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$/.test(o.nodeName)) {
    throw invalid(`nodeName must look like couchdb@127.0.0.1, got ${JSON.stringify(o.nodeName)}`);
  }
  const out: InstanceSettings = {
    instanceId: o.instanceId,
    port,
    bindAddress: o.bindAddress,
    dataDir,
    instanceDir,
    nodeName: o.nodeName,
    epmdPort,
    couchdbHome,
  };
  if (o.cluster !== undefined) {
    const c = o.cluster as Record<string, unknown> | null;
    if (!c || typeof c !== 'object' || Array.isArray(c)) throw invalid('cluster must be {distPort, n, q, uuid, secretsFile}');
    if (typeof c.uuid !== 'string' || !/^[0-9a-f]{32}$/.test(c.uuid)) throw invalid('cluster.uuid must be 32 hexadecimal digits');
    out.cluster = { distPort: int(c.distPort, 1, 65535, 'cluster.distPort'), n: int(c.n, 1, 9, 'cluster.n'), q: int(c.q, 1, 64, 'cluster.q'), uuid: c.uuid, secretsFile: absPath(c.secretsFile, 'cluster.secretsFile') };
    if (c.epmdless !== undefined) {
      if (typeof c.epmdless !== 'boolean') throw invalid('cluster.epmdless must be true or false');
      if (c.epmdless) out.cluster.epmdless = true;
    }
    if ([port, epmdPort].includes(out.cluster.distPort)) throw invalid('cluster.distPort must differ from port and epmdPort');
  }
  if (o.volumeBytes !== undefined) out.volumeBytes = int(o.volumeBytes, 1, Number.MAX_SAFE_INTEGER, 'volumeBytes');
  if (o.flavor !== undefined) {
    const f = o.flavor as Record<string, unknown> | null;
    if (!f || typeof f !== 'object') throw invalid('flavor must be {ramMb, vcpus}');
    out.flavor = { ramMb: int(f.ramMb, 64, 16 * 1024 * 1024, 'flavor.ramMb'), vcpus: int(f.vcpus, 1, 1024, 'flavor.vcpus') };
  }
  if (o.overrides !== undefined) {
    if (!o.overrides || typeof o.overrides !== 'object' || Array.isArray(o.overrides)) throw invalid('overrides must be an object of "section/key": "value"');
    out.overrides = { ...(o.overrides as Record<string, string>) };
  }
  if (o.restore !== undefined) {
    const r = o.restore as Record<string, unknown> | null;
    if (!r || typeof r !== 'object') throw invalid('restore must be {storage, backupId, keyFile?}');
    out.restore = { storage: checkStorageUrl(r.storage), backupId: checkBackupId(r.backupId) };
    if (r.keyFile !== undefined) out.restore.keyFile = absPath(r.keyFile, 'restore.keyFile');
    if (r.time !== undefined || r.stream !== undefined) {
      if (typeof r.time !== 'string' || Number.isNaN(Date.parse(r.time))) throw invalid(`restore.time must be an ISO 8601 time, got ${JSON.stringify(r.time)}`);
      if (typeof r.stream !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(r.stream)) throw invalid(`restore.stream must be an archive stream name, got ${JSON.stringify(r.stream)}`);
      out.restore.time = r.time;
      out.restore.stream = r.stream;
    }
    if (r.databases !== undefined) {
      if (!Array.isArray(r.databases) || r.databases.length === 0) throw invalid('restore.databases must be a non-empty array of database names');
      out.restore.databases = r.databases.map((d) => checkDatabaseName(d));
    }
  }
  if (o.runAs !== undefined) {
    const r = o.runAs as Record<string, unknown> | null;
    if (!r || typeof r !== 'object') throw invalid('runAs must be {uid, gid}');
    // Never root: the point is an identity that owns nothing but this instance.
    out.runAs = { uid: int(r.uid, 1, 2 ** 31 - 1, 'runAs.uid'), gid: int(r.gid, 1, 2 ** 31 - 1, 'runAs.gid') };
    if (process.getuid && process.getuid() !== 0) throw invalid(`runAs needs the agent to run as root (it runs as uid ${process.getuid()})`);
  }
  return out;
}
