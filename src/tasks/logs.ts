// Trove's guest log API for CouchDB's log (GET/POST /instances/{id}/log; docs/control-plane.md). The
// log is a SYS log, as Trove calls the logs a datastore always writes: always on, so enable is a no-op
// and disable is refused. publish copies the current log file into the backup repository's object
// storage under logs/<instance>/<name>/ (as Trove publishes to a Swift container), with a metafile
// saying what was published; discard removes both. tail reads the last lines through the agent.
import { Readable } from 'node:stream';
import type { Row } from '../state/index.js';
import { openStorage, ObjectNotFoundError, type Backend } from '../storage/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { badRequest, notFound, unprocessable } from './errors.js';
import { opsOf } from './facts.js';
import type { AgentOpsApi, LogFileInfo } from '../agent/protocol.js';

/** The logs an instance's guest log API shows (the agent also keeps its own, for operators). */
export const GUEST_LOGS = ['couchdb'] as const;
const isGuestLog = (name: string): boolean => (GUEST_LOGS as readonly string[]).includes(name);

interface Published {
  /** Bytes and lines of the published copy, and when it was published. */
  size: number;
  lines: number;
  published: string;
  /** Bytes of the log file the copy was made from: the copy leaves out the agent's own request lines (operations.md), so it is shorter. */
  covers?: number;
}

/** Trove's container name for published guest logs, which couchtrove serves read-only as Swift (src/api/object-store.ts). */
export const LOG_CONTAINER = 'database_logs';

const prefix = (inst: Pick<Row<'instances'>, 'id'>, name: string): string => `logs/${inst.id}/${name}/`;
const objectKey = (inst: Pick<Row<'instances'>, 'id'>, name: string): string => `${prefix(inst, name)}log`;
const metafile = (inst: Pick<Row<'instances'>, 'id'>, name: string): string => `logs/${inst.id}/${name}.metafile.json`;

async function liveOps(plane: ControlPlane, inst: Row<'instances'>): Promise<AgentOpsApi> {
  if (!['ACTIVE', 'RESTART_REQUIRED', 'BACKUP'].includes(inst.status)) {
    throw unprocessable(`Instance ${inst.id} is ${inst.status}: its logs can be read when it is ACTIVE.`);
  }
  let agent: unknown;
  try {
    agent = await plane.compute.agent(inst);
  } catch (err) {
    throw unprocessable(`Instance ${inst.id}: its agent cannot be reached: ${describeError(err)}`);
  }
  const ops = opsOf(agent);
  if (!ops.logs || !ops.readLog || !ops.dataStats) throw unprocessable(`Instance ${inst.id}: its agent does not serve logs (an older agent: restart the instance).`);
  return ops as AgentOpsApi;
}

async function readPublished(repo: Backend, inst: Pick<Row<'instances'>, 'id'>, name: string): Promise<Published | null> {
  try {
    const chunks: Buffer[] = [];
    for await (const c of await repo.get(metafile(inst, name))) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Published;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  }
}

/** Trove's DatastoreLog view: name, type, status, published, pending, container, prefix, metafile (and couchtrove's size fields). */
function view(inst: Row<'instances'>, f: LogFileInfo, pub: Published | null): Record<string, unknown> {
  const pending = pub ? Math.max(0, f.size - (pub.covers ?? pub.size)) : f.size;
  return {
    name: f.name,
    type: 'SYS',
    status: pub ? (pending > 0 ? 'Partial' : 'Published') : 'Enabled',
    published: pub?.size ?? 0,
    pending,
    container: LOG_CONTAINER,
    prefix: prefix(inst, f.name),
    metafile: metafile(inst, f.name),
    size: f.size,
    rotated_bytes: f.rotatedBytes,
    max_bytes: f.maxBytes,
    ...(pub ? { published_at: pub.published } : {}),
  };
}

async function fileInfo(ops: AgentOpsApi, name: string): Promise<LogFileInfo> {
  if (!isGuestLog(name)) throw notFound(`No log ${JSON.stringify(name.slice(0, 80))}: the logs of a couchdb instance are ${GUEST_LOGS.join(', ')}.`);
  const f = (await agentCall(withTimeout(ops.logs(), 10_000))).find((x) => x.name === name);
  if (!f) throw notFound(`Log ${name} is not there yet (the instance is not prepared).`);
  return f;
}

export async function listLogs(plane: ControlPlane, projectId: string, id: string): Promise<Record<string, unknown>[]> {
  const inst = await plane.instance(projectId, id);
  const ops = await liveOps(plane, inst);
  const files = (await agentCall(withTimeout(ops.logs(), 10_000))).filter((f) => isGuestLog(f.name));
  return plane.withRepository(async (repo) => Promise.all(files.map(async (f) => view(inst, f, await readPublished(repo, inst, f.name)))));
}

export interface LogAction {
  name: string;
  enable?: boolean;
  disable?: boolean;
  publish?: boolean;
  discard?: boolean;
}

/** POST /log: show (no action), enable, disable, publish, discard (discard before publish when both are given, as Trove). */
export async function logAction(plane: ControlPlane, projectId: string, id: string, a: LogAction): Promise<Record<string, unknown>> {
  const inst = await plane.instance(projectId, id);
  const ops = await liveOps(plane, inst);
  const f = await fileInfo(ops, a.name);
  if (a.enable && a.disable) throw badRequest('Give "enable" or "disable", not both.');
  if (a.disable) throw badRequest(`Log ${a.name} is a SYS log: CouchDB always writes it, it cannot be disabled (its size is capped: rotated at ${f.maxBytes} bytes).`);
  return plane.withRepository(async (repo) => {
    if (a.discard) {
      await repo.delete(objectKey(inst, a.name));
      await repo.delete(metafile(inst, a.name));
    }
    if (a.publish) {
      const r = await agentCall(ops.readLog(a.name, 0));
      const body = Buffer.from(r.text, 'utf8');
      // Like Trove's Swift objects: the line count rides along as object metadata.
      await repo.put(objectKey(inst, a.name), Readable.from([body]), { metadata: { lines: String(r.lines) }, sizeHint: body.length });
      const pub: Published = { size: body.length, lines: r.lines, published: new Date().toISOString().replace(/\.\d+Z$/, ''), covers: f.size };
      const meta = Buffer.from(JSON.stringify(pub));
      await repo.put(metafile(inst, a.name), Readable.from([meta]), { sizeHint: meta.length });
      plane.log(`published the ${a.name} log of instance ${inst.id} (${body.length} bytes) to ${repo.location}`);
      return view(inst, f, pub);
    }
    return view(inst, f, await readPublished(repo, inst, a.name));
  });
}

/** couchtrove's addition: the log's last lines through the API (Trove's clients read published logs from Swift). */
export async function tailLog(plane: ControlPlane, projectId: string, id: string, name: string, lines: number): Promise<{ name: string; lines: number; text: string }> {
  const inst = await plane.instance(projectId, id);
  const ops = await liveOps(plane, inst);
  await fileInfo(ops, name);
  return agentCall(ops.readLog(name, lines));
}

/** A published copy as the Swift view lists it: its repository key, bytes, lines and publication time. */
export interface PublishedObject extends Published {
  key: string;
}

/** The published copies of a project's instances whose keys start with keyPrefix, by key (from the metafiles). */
export async function listPublished(plane: ControlPlane, projectId: string, keyPrefix: string): Promise<PublishedObject[]> {
  const instances = (await plane.store.find('instances', { project_id: projectId })).filter((i) => {
    const own = `logs/${i.id}/`;
    return own.startsWith(keyPrefix) || keyPrefix.startsWith(own);
  });
  return plane.withRepository(async (repo) => {
    const out: PublishedObject[] = [];
    for (const inst of instances) {
      for (const name of GUEST_LOGS) {
        const pub = await readPublished(repo, inst, name);
        if (pub && objectKey(inst, name).startsWith(keyPrefix)) out.push({ key: objectKey(inst, name), ...pub });
      }
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  });
}

/**
 * One published copy of the project's, with its body when asked (the repository is closed once the body
 * has been read or dropped); null when the key is no published log of this project's.
 */
export async function readPublishedObject(plane: ControlPlane, projectId: string, key: string, withBody: boolean): Promise<{ object: PublishedObject; body?: Readable } | null> {
  const m = /^logs\/([^/]+)\/([^/]+)\/log$/.exec(key);
  if (!m || !isGuestLog(m[2]!)) return null;
  const inst = await plane.store.get('instances', m[1]!);
  if (!inst || inst.project_id !== projectId) return null;
  const repo = await openStorage(plane.config.repository);
  let handedOver = false;
  try {
    const pub = await readPublished(repo, inst, m[2]!);
    if (!pub) return null;
    const object = { key, ...pub };
    if (!withBody) return { object };
    const body = await repo.get(key);
    body.once('close', () => void repo.close());
    handedOver = true;
    return { object, body };
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return null;
    throw err;
  } finally {
    if (!handedOver) await repo.close();
  }
}
