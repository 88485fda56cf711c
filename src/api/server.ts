// The Trove v1.0 API (docs/control-plane.md, shared trove-api.md): fastify routes under
// /v1.0/{project_id}/..., token auth per project, Trove's response shapes and error bodies.
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ServerConfig } from '../config/server.js';
import { MarkerNotFoundError, type Row, type StateStore } from '../state/index.js';
import type { ControlPlane, UserSpec } from '../tasks/control.js';
import { DATASTORE, restoredFromOf, stableId } from '../tasks/control.js';
import { deletedView, listArchiveCuts, restoreTime } from '../tasks/recovery.js';
import { ServiceError, badRequest, notFound, type FaultName } from '../tasks/errors.js';
import { describeError } from '../util/errors.js';
import * as v from './validate.js';
import { registerScheduleRoutes } from './schedules.js';
import { refuseUnhonouredOptions, registerUnsupportedRoutes } from './unsupported.js';
import { registerClusterRoutes } from './clusters.js';
import { registerOperationsRoutes, type Liveness } from './operations.js';
import { registerIdentityRoutes } from './identity.js';
import { registerObjectStoreRoutes } from './object-store.js';
import { registerConsoleRoutes } from './console.js';
import { detachReplica, ejectReplicaSource, promoteReplica, replicationView } from '../tasks/replication.js';
import { archiveStatusView, archiveView, restoreDatabase, setArchive } from '../tasks/archive.js';
import { createConfiguration, deleteConfiguration, setConfiguration, updateConfiguration } from '../tasks/configurations.js';
import { type UserAccess, changePasswords, createDatabases, createUsers, deleteDatabase, deleteUser, disableRoot, enableRoot, getUser, grantAccess, listDatabases, listUsers, revokeAccess, rootEnabled } from '../tasks/access.js';
import { createBackup, deleteBackup } from '../tasks/backups.js';
import { createClusterBackup } from '../tasks/cluster-backup.js';
import { requestVerify } from '../tasks/verify.js';
import { instanceFacts } from '../tasks/facts.js';
import { upgradeInstance } from '../tasks/upgrade.js';
import { listLogs, logAction, tailLog } from '../tasks/logs.js';
import { COUCHDB_PARAMETERS, couchdbParameter, troveParameterView, typeParameterValue } from '../config/couchdb-parameters.js';
import { backupView, configurationView, datastoreView, flavorView, instanceView, links, snakeKeys, versionView } from './views.js';

export const LOCAL_TOKEN = 'notused';
const DEFAULT_PAGE = 20;
const MAX_PAGE = 1000;

type Req = FastifyRequest<{ Params: Record<string, string>; Querystring: Record<string, string | string[] | undefined> }>;

const FAULTS: Record<number, FaultName> = {
  400: 'badRequest', 401: 'unauthorized', 403: 'forbidden', 404: 'itemNotFound', 405: 'badMethod', 409: 'conflictingRequest',
  413: 'requestEntityTooLarge', 422: 'unprocessableEntity', 501: 'notImplemented', 503: 'serviceUnavailable',
};

export function faultBody(status: number, message: string, name?: string): Record<string, { code: number; message: string }> {
  return { [name ?? FAULTS[status] ?? (status >= 500 ? 'instanceFault' : 'badRequest')]: { code: status, message } };
}

export interface ApiOptions {
  plane: ControlPlane;
  log?: (m: string) => void;
  /** Log every request (method, path, status) through log, when requestLogger is not given. */
  accessLog?: boolean;
  /** The request log: one line per request at info (probes and metrics at debug), with its request id. */
  requestLogger?: Logger;
  /** The backup scheduler, for readiness (src/api/operations.ts). */
  scheduler?: Liveness;
  /** Free bytes on the state directory's file system, for readiness (tests inject a full disk). */
  diskFree?: (dir: string) => Promise<number>;
}

/**
 * The project of a token, or undefined. Every configured token is compared, exactly and in constant time:
 * SHA-256 digests (equal length whatever was sent) through timingSafeEqual, so the time taken says
 * nothing about how much of a token a guess got right.
 */
export function tokenMatcher(config: ServerConfig): (token: string | undefined) => string | undefined {
  const digest = (t: string): Buffer => createHash('sha256').update(t, 'utf8').digest();
  const known = config.projects.flatMap((p) => p.tokens.map((t) => ({ project: p.id, digest: digest(t) })));
  return (token) => {
    if (!token) return undefined;
    const d = digest(token);
    let owner: string | undefined;
    for (const k of known) if (timingSafeEqual(d, k.digest) && owner === undefined) owner = k.project;
    // "notused" is no secret: what the clients send without credentials (local mode, loopback only).
    if (owner === undefined && token === LOCAL_TOKEN && config.authMode === 'local') owner = config.localProject;
    return owner;
  };
}

function one(q: string | string[] | undefined): string | undefined {
  return Array.isArray(q) ? q[q.length - 1] : q;
}

/**
 * `?name=X` on the lists of instances, backups and configurations (a couchtrove extension): what the CLI
 * resolves a name with, so that a name is never first tried as an id (a 404 in the request log).
 */
function byName(req: { query: Record<string, string | string[] | undefined> }): { where: { name?: string }; extra: Record<string, string> } {
  const n = one(req.query.name);
  return n === undefined ? { where: {}, extra: {} } : { where: { name: n }, extra: { name: n } };
}

/** A user entry's databases, each {"name", "role"?} (couchtrove's addition: "admin" may write design documents). */
function userAccess(o: v.Obj, i: number): Pick<UserSpec, 'databases' | 'adminOf'> {
  const a = v.optional(o.databases, (x) => v.accessList(x, `"users"[${i}].databases`));
  return { databases: a?.databases ?? [], ...(a?.adminOf.length ? { adminOf: a.adminOf } : {}) };
}

export interface ApiRoute {
  method: string;
  url: string;
}
const routeTables = new WeakMap<FastifyInstance, ApiRoute[]>();

/** Every route buildApi registered (method and URL pattern), e.g. for a fuzz test that must cover them all. */
export function registeredRoutes(app: FastifyInstance): ApiRoute[] {
  return [...(routeTables.get(app) ?? [])];
}

export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  const { plane } = options;
  const store: StateStore = plane.store;
  const projectOfToken = tokenMatcher(plane.config);
  const log = options.log ?? (() => undefined);
  const app = Fastify({
    logger: false,
    bodyLimit: plane.config.maxBodyBytes,
    return503OnClosing: true,
    // Errors raised before routing (a malformed URL, a bad content type header): Trove bodies too.
    frameworkErrors: (error, _req, reply) => {
      const status = typeof (error as { statusCode?: number }).statusCode === 'number' ? (error as { statusCode: number }).statusCode : 400;
      const code = status >= 500 ? 400 : status;
      const r = reply as unknown as FastifyReply;
      void r.code(code).send(faultBody(code, `Bad request: ${describeError(error)}`));
    },
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 1024 },
    // Trove's request ids (req-UUID), returned in x-openstack-request-id and named in the request log.
    requestIdHeader: false,
    genReqId: () => `req-${randomUUID()}`,
  });
  const routes: ApiRoute[] = [];
  routeTables.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-openstack-request-id', req.id);
  });
  // JSON bodies: an empty body is no body (clients send Content-Type on DELETE too); __proto__ keys are refused.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, raw, done) => {
    const text = typeof raw === 'string' ? raw : raw.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text, (k, val: unknown) => {
        if (k === '__proto__' || k === 'constructor') throw new SyntaxError(`the key ${JSON.stringify(k)} is not allowed`);
        return val;
      }));
    } catch (err) {
      done(Object.assign(new Error(`Malformed request body: ${describeError(err)}`), { statusCode: 400 }), undefined);
    }
  });

  // Links name the configured public URL, else the listener: never the request's Host header, which any
  // client sets (a link or X-Server-Management-Url pointing elsewhere would take the next request's token).
  const base = (_req?: FastifyRequest): string => {
    if (plane.config.publicUrl) return plane.config.publicUrl;
    const bound = app.server.address() as AddressInfo | null;
    const host = plane.config.host.includes(':') && !plane.config.host.startsWith('[') ? `[${plane.config.host}]` : plane.config.host;
    return `http://${host}:${bound?.port ?? plane.config.port}`;
  };

  // Every error is Trove's body with a 4xx for what the client sent wrong.
  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof ServiceError) return reply.code(err.status).send(faultBody(err.status, err.message, err.fault));
    if (err instanceof MarkerNotFoundError) return reply.code(400).send(faultBody(400, `Invalid marker: ${err.marker} is not in this list.`));
    const e = err as { statusCode?: number; code?: string; message?: string };
    // An agent that does not answer is a service that is unavailable for now, not an internal error.
    if (e.code === 'UNREACHABLE') return reply.code(503).send(faultBody(503, describeError(err), 'serviceUnavailable'));
    const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
    if (status >= 400 && status < 500) {
      let msg = e.message ?? 'bad request';
      if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) msg = `Malformed request body: ${msg}`;
      if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') msg = `Request body larger than ${plane.config.maxBodyBytes} bytes.`;
      if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') msg = `Unsupported Content-Type ${JSON.stringify(String(req.headers['content-type'] ?? '').slice(0, 80))}: send application/json.`;
      return reply.code(status).send(faultBody(status, msg));
    }
    log(`${req.method} ${req.url.slice(0, 200)}: ${describeError(err)}`);
    return reply.code(500).send(faultBody(500, `Internal error: ${describeError(err)}`));
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(faultBody(404, `No such resource: ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}.`));
  });
  const rlog = options.requestLogger;
  if (rlog) {
    // Method, route, path and status only: never headers (tokens) or bodies (passwords).
    app.addHook('onResponse', async (req, reply) => {
      const params = (req.params ?? {}) as Record<string, string | undefined>;
      const route = req.routeOptions.url ?? 'unmatched';
      const fields: Record<string, unknown> = {
        req_id: req.id, method: req.method, route, path: req.url.split('?')[0]!.slice(0, 200), status: reply.statusCode, ms: Math.round(reply.elapsedTime),
      };
      if (params.project) fields.project_id = params.project;
      if (params.id && route.includes('/instances/:id')) fields.instance_id = params.id;
      if (params.id && route.includes('/backups/:id')) fields.backup_id = params.id;
      const quiet = route === '/health' || route === '/health/ready' || route === '/metrics';
      if (quiet) rlog.debug(fields, 'request');
      else if (reply.statusCode >= 500) rlog.error(fields, 'request');
      else rlog.info(fields, 'request');
    });
  } else if (options.accessLog) {
    app.addHook('onResponse', async (req, reply) => log(`${req.method} ${req.url.slice(0, 200)} ${reply.statusCode}`));
  }

  // ---- unauthenticated ----------------------------------------------------------------------
  // Health, readiness and metrics (src/api/operations.ts); first, so its hooks see every route.
  await registerOperationsRoutes(app, plane, { log, ...(options.scheduler ? { scheduler: options.scheduler } : {}), ...(options.diskFree ? { diskFree: options.diskFree } : {}) });
  const versions = async (req: FastifyRequest): Promise<unknown> => ({
    versions: [{ id: 'v1.0', status: 'CURRENT', updated: '2012-08-01T00:00:00Z', links: [{ href: `${base(req)}/v1.0/`, rel: 'self' }] }],
  });
  app.get('/', versions);
  app.get('/v1.0', async (req) => ({ version: ((await versions(req)) as { versions: unknown[] }).versions[0] }));

  // Legacy auth (trove --os-auth-url .../auth): X-Auth-Key is the token.
  app.get('/auth', async (req, reply) => {
    const key = typeof req.headers['x-auth-key'] === 'string' ? req.headers['x-auth-key'] : undefined;
    const wanted = typeof req.headers['x-auth-project-id'] === 'string' ? req.headers['x-auth-project-id'] : undefined;
    let token: string | undefined;
    let project = projectOfToken(key);
    if (project) token = key;
    else if (plane.config.authMode === 'local') {
      token = LOCAL_TOKEN;
      project = plane.config.localProject;
    }
    if (!token || !project) return reply.code(401).send(faultBody(401, 'Authentication failed: X-Auth-Key is not a known token.'));
    if (wanted && wanted !== project) return reply.code(401).send(faultBody(401, `Authentication failed: the token is for project ${project}, not ${wanted.slice(0, 80)}.`));
    return reply.code(204).header('X-Auth-Token', token).header('X-Server-Management-Url', `${base(req)}/v1.0/${project}`).send();
  });

  // Keystone v3's password flow and the Swift view of published logs, for the clients' log tail and save.
  registerIdentityRoutes(app, plane, { base, projectOf: projectOfToken });
  registerObjectStoreRoutes(app, plane, projectOfToken);
  // The web console's static files (src/api/console.ts); it calls the API below like any client.
  registerConsoleRoutes(app);

  // ---- authenticated, per project -----------------------------------------------------------
  await app.register(async (api) => {
    api.addHook('onRequest', async (req: Req, reply: FastifyReply) => {
      const raw = req.headers['x-auth-token'];
      const token = Array.isArray(raw) ? raw[0] : raw;
      const project = req.params.project ?? '';
      const owner = projectOfToken(token);
      if (!owner) {
        return reply.code(401).send(faultBody(401, token ? 'The X-Auth-Token is not valid.' : 'Authentication required: send X-Auth-Token.'));
      }
      if (owner !== project) {
        return reply.code(403).send(faultBody(403, `The token is for project ${owner}, not ${project.slice(0, 80)}.`));
      }
      return undefined;
    });

    const page = (req: Req): { limit: number; marker?: string } => {
      const l = one(req.query.limit);
      const limit = l === undefined ? DEFAULT_PAGE : v.integer(l, 'limit', 1, MAX_PAGE);
      const m = one(req.query.marker);
      return m === undefined || m === '' ? { limit } : { limit, marker: m };
    };
    const nextLinks = (req: Req, rows: Array<{ id: string }>, limit: number, path: string, extra: Record<string, string> = {}): Record<string, unknown> => {
      if (rows.length <= limit) return { links: [] };
      const q = new URLSearchParams({ ...extra, limit: String(limit), marker: rows[limit - 1]!.id });
      return { links: [{ href: `${base(req)}/v1.0/${req.params.project}/${path}?${q.toString()}`, rel: 'next' }] };
    };
    const body = (req: FastifyRequest, key: string): v.Obj => {
      const b = v.obj(req.body ?? null, 'The request body');
      return v.obj(b[key], `"${key}"`);
    };
    const showInstance = async (req: Req, inst: Row<'instances'>, detail: boolean): Promise<Record<string, unknown>> => {
      const replicas = detail ? (await store.find('instances', { replica_of: inst.id })).map((r) => r.id) : [];
      const configuration = detail && inst.configuration_id ? await store.get('configurations', inst.configuration_id) : undefined;
      // The agent's answers at once, not one after the other (a show is what the console waits for).
      // Archive: live on show, from the health monitor's last reading in listings (the restorable window).
      const [used, facts, replication, archive] = await Promise.all([
        detail ? plane.volumeUsed(inst) : null,
        detail ? instanceFacts(plane, inst) : undefined,
        detail ? replicationView(plane, inst) : undefined,
        archiveView(plane, inst, detail),
      ]);
      const view = instanceView(base(req), inst, plane.config.region, { used, replicas, configuration, engine: plane.compute.engine, isolationWarning: plane.compute.isolationWarning, detail, ...(facts ? { facts } : {}) });
      if (replication) view.replication = replication;
      if (archive) view.archive = archive;
      const restored = detail ? restoredFromOf(inst) : undefined;
      if (restored) view.restored_from = restored;
      return view;
    };

    // Instances
    api.get('/instances', async (req: Req) => {
      const p = page(req);
      const n = byName(req);
      const deleted = one(req.query.deleted);
      if (deleted !== undefined && !['true', 'false', '1', '0'].includes(deleted)) throw badRequest('"deleted" must be true or false.');
      if (deleted === 'true' || deleted === '1') {
        // couchtrove extension: deleted instances whose archive or backups are kept (src/tasks/recovery.ts).
        const rows = await store.find('deleted_instances', { project_id: req.params.project!, ...n.where }, { ...p, limit: p.limit + 1 });
        const views = (await Promise.all(rows.slice(0, p.limit).map((d) => deletedView(plane, d)))).filter((x) => x !== null);
        return { instances: views, ...nextLinks(req, rows, p.limit, 'instances', { deleted: 'true', ...n.extra }) };
      }
      const rows = await store.find('instances', { project_id: req.params.project!, ...n.where }, { ...p, limit: p.limit + 1 });
      const views = await Promise.all(rows.slice(0, p.limit).map((i) => showInstance(req, i, false)));
      return { instances: views, ...nextLinks(req, rows, p.limit, 'instances', n.extra) };
    });
    api.get('/instances/detail', async (req: Req) => {
      const p = page(req);
      const n = byName(req);
      const rows = await store.find('instances', { project_id: req.params.project!, ...n.where }, { ...p, limit: p.limit + 1 });
      const views = await Promise.all(rows.slice(0, p.limit).map((i) => showInstance(req, i, true)));
      return { instances: views, ...nextLinks(req, rows, p.limit, 'instances/detail', n.extra) };
    });
    api.post('/instances', async (req: Req) => {
      const b = body(req, 'instance');
      refuseUnhonouredOptions(b, plane.compute.name, 'create');
      const volume = v.optional(b.volume, (x) => v.obj(x, '"volume"'));
      const ds = v.optional(b.datastore, (x) => v.obj(x, '"datastore"'));
      if (ds && ds.type !== undefined && ds.type !== null && ds.type !== DATASTORE) throw badRequest(`Datastore ${JSON.stringify(String(ds.type).slice(0, 80))} is not served here: the only datastore is ${DATASTORE}.`);
      const databases = v.optional(b.databases, (x) => v.dbList(x, '"databases"')) ?? [];
      const users: UserSpec[] = (v.optional(b.users, (x) => v.arr(x, '"users"')) ?? []).map((u, i) => {
        const o = v.obj(u, `"users"[${i}]`);
        return { name: v.userName(o.name, `"users"[${i}].name`), password: v.password(o.password, `"users"[${i}].password`), ...userAccess(o, i) };
      });
      if (new Set(users.map((u) => u.name)).size !== users.length) throw badRequest('"users": the same user is given twice.');
      const restore = v.optional(b.restorePoint, (x) => v.obj(x, '"restorePoint"'));
      if (restore) {
        v.noUnknown(restore, ['backupRef', 'instanceRef', 'restoreTime'], '"restorePoint"');
        if ((restore.backupRef === undefined || restore.backupRef === null) === (restore.instanceRef === undefined || restore.instanceRef === null)) throw badRequest('"restorePoint" takes exactly one of "backupRef" (a backup) and "instanceRef" (a live or deleted instance, with "restoreTime").');
      }
      const inst = await plane.createInstance(req.params.project!, {
        name: v.displayName(b.name, '"name"'),
        // python-troveclient sends no flavorRef with --replica-of ("Flavor is ignored for creating replica"):
        // a replica takes its source's flavor, as Trove does.
        flavorRef: b.flavorRef === undefined && (b.replica_of ?? b.slave_of) !== undefined ? null : v.ref(b.flavorRef, '"flavorRef"'),
        volumeSize: volume && volume.size !== undefined && volume.size !== null ? v.integer(volume.size, '"volume"."size"', 1, 1 << 20) : null,
        datastoreVersion: ds ? v.optional(ds.version, (x) => v.ref(x, '"datastore"."version"')) : null,
        databases,
        users,
        // Trove's backupRef, or couchtrove's instanceRef (a live or deleted instance, restored as of restoreTime).
        backupRef: restore ? v.optional(restore.backupRef, (x) => v.ref(x, '"restorePoint"."backupRef"')) : null,
        instanceRef: restore ? v.optional(restore.instanceRef, (x) => v.ref(x, '"restorePoint"."instanceRef"')) : null,
        restoreTime: restore ? v.optional(restore.restoreTime, (x) => v.text(x, '"restorePoint"."restoreTime"', 80)) : null,
        replicaOf: v.optional(b.replica_of ?? b.slave_of, (x) => v.ref(x, '"replica_of"')),
        configurationId: v.optional(b.configuration, (x) => v.ref(x, '"configuration"')),
      });
      return { instance: await showInstance(req, inst, true) };
    });
    api.get('/instances/:id', async (req: Req) => ({ instance: await showInstance(req, await plane.instance(req.params.project!, req.params.id!), true) }));
    api.delete('/instances/:id', async (req: Req, reply) => {
      // What stays restorable, and until when (the Trove clients ignore the body of a 202).
      const kept = await plane.deleteInstance(req.params.project!, req.params.id!);
      return reply.code(202).send({ instance: { id: req.params.id!, kept } });
    });
    const updateInstance = async (req: Req, reply: FastifyReply): Promise<FastifyReply> => {
      const b = body(req, 'instance');
      const inst = await plane.instance(req.params.project!, req.params.id!);
      // Upgrade (troveclient's upgrade(): PATCH {"instance": {"datastore_version": X}}): Trove accepts it alone.
      if ('datastore_version' in b) {
        if (Object.keys(b).length !== 1) throw badRequest('"datastore_version" (an upgrade) cannot be combined with other changes in one request.');
        const ref = v.ref(b.datastore_version, '"datastore_version"');
        const target = (await store.find('datastore_versions', { datastore: DATASTORE })).find((x) => x.id === ref || x.name === ref);
        if (!target) throw notFound(`Datastore version ${ref.slice(0, 80)} for datastore ${DATASTORE} could not be found.`);
        await upgradeInstance(plane, req.params.project!, inst.id, target);
        return reply.code(202).send();
      }
      refuseUnhonouredOptions(b, plane.compute.name, 'update');
      if (b.name !== undefined) {
        const name = v.displayName(b.name, '"name"');
        await store.update('instances', inst.id, { name, updated: new Date().toISOString() });
      }
      // Detach a replica (troveclient's update(detach_replica_source=True) sends "replica_of": null; old ones "slave_of").
      const detach = ['replica_of', 'slave_of'].filter((k) => k in b);
      if (detach.length > 0) {
        if (detach.some((k) => b[k] !== null)) throw badRequest('"replica_of" can only be set to null (detach the replica); a replica is made at create.');
        if ('configuration' in b) throw badRequest('Detaching a replica and changing its configuration cannot be done in one request.');
        await detachReplica(plane, req.params.project!, inst.id);
        return reply.code(202).send();
      }
      if ('configuration' in b || Object.keys(b).length === 0) {
        const conf = v.optional(b.configuration, (x) => v.ref(x, '"configuration"'));
        await setConfiguration(plane, req.params.project!, inst.id, conf);
      }
      return reply.code(202).send();
    };
    api.put('/instances/:id', updateInstance);
    api.patch('/instances/:id', updateInstance);
    api.post('/instances/:id/action', async (req: Req, reply) => {
      const b = v.obj(req.body ?? null, 'The request body');
      const keys = Object.keys(b);
      if (keys.length !== 1) throw badRequest('The action body must have exactly one action: restart, resize, promote_to_replica_source, eject_replica_source or archive.');
      const project = req.params.project!;
      const id = req.params.id!;
      if (keys[0] === 'restart') {
        await plane.restartInstance(project, id);
      } else if (keys[0] === 'resize') {
        const r = v.obj(b.resize, '"resize"');
        if (r.flavorRef !== undefined && r.volume !== undefined) throw badRequest('Resize either the flavor or the volume, not both at once.');
        if (r.flavorRef !== undefined) await plane.resizeFlavor(project, id, v.ref(r.flavorRef, '"resize"."flavorRef"'));
        else if (r.volume !== undefined) {
          const vol = v.obj(r.volume, '"resize"."volume"');
          await plane.resizeVolume(project, id, v.integer(vol.size, '"resize"."volume"."size"', 1, 1 << 20));
        } else throw badRequest('"resize" needs "flavorRef" or "volume".');
      } else if (keys[0] === 'promote_to_replica_source') {
        await promoteReplica(plane, project, id);
      } else if (keys[0] === 'eject_replica_source') {
        // Says why the source counts as gone and when it was last seen (the Trove clients ignore the body).
        return reply.code(202).send({ eject: await ejectReplicaSource(plane, project, id) });
      } else if (keys[0] === 'archive') {
        // couchtrove extension: continuous archiving on or off (docs/control-plane.md).
        const a = v.obj(b.archive, '"archive"');
        if (typeof a.enabled !== 'boolean') throw badRequest('"archive"."enabled" must be true or false.');
        const status = await setArchive(plane, project, id, {
          enabled: a.enabled,
          interval: v.optional(a.interval, (x) => v.integer(x, '"archive"."interval"', 1, 3600)) ?? undefined,
          keepDays: v.optional(a.keep_days, (x) => v.integer(x, '"archive"."keep_days"', 1, 3650)) ?? undefined,
        });
        return reply.code(200).send({ archive: archiveStatusView(status) });
      } else {
        await plane.instance(project, id);
        throw badRequest(`Unknown action ${JSON.stringify(keys[0]!.slice(0, 80))}: couchtrove supports restart, resize, promote_to_replica_source, eject_replica_source and archive.`);
      }
      return reply.code(202).send();
    });
    api.get('/instances/:id/backups', async (req: Req) => {
      const inst = await plane.instance(req.params.project!, req.params.id!);
      const p = page(req);
      const rows = await store.find('backups', { project_id: req.params.project!, instance_id: inst.id }, { ...p, limit: p.limit + 1 });
      return { backups: rows.slice(0, p.limit).map((b) => backupView(base(req), b)), ...nextLinks(req, rows, p.limit, `instances/${inst.id}/backups`) };
    });
    api.get('/instances/:id/configuration', async (req: Req) => {
      const inst = await plane.instance(req.params.project!, req.params.id!);
      const s = await plane.settings(inst);
      // Typed as the catalogue says (numbers as numbers), like a group's values.
      const typed = Object.entries(s.overrides ?? {}).map(([k, raw]) => {
        const p = couchdbParameter(k);
        const r = p ? typeParameterValue(p, raw) : undefined;
        return [k, r && 'value' in r ? r.value : raw];
      });
      return { instance: { configuration: Object.fromEntries(typed) } };
    });

    // Databases
    const pageNames = (req: Req, names: string[], path: string): Record<string, unknown> => {
      const p = page(req);
      let start = 0;
      if (p.marker !== undefined) {
        const i = names.indexOf(p.marker);
        if (i < 0) throw badRequest(`Invalid marker: ${p.marker.slice(0, 80)} is not in this list.`);
        start = i + 1;
      }
      const rows = names.slice(start, start + p.limit + 1).map((n) => ({ id: n }));
      return { names: rows.slice(0, p.limit).map((r) => r.id), ...nextLinks(req, rows, p.limit, path) };
    };
    api.get('/instances/:id/databases', async (req: Req) => {
      const names = await listDatabases(plane, req.params.project!, req.params.id!);
      const { names: shown, links: l } = pageNames(req, names, `instances/${req.params.id}/databases`) as { names: string[]; links: unknown };
      return { databases: shown.map((name) => ({ name })), links: l };
    });
    api.post('/instances/:id/databases', async (req: Req, reply) => {
      const b = v.obj(req.body ?? null, 'The request body');
      const names = v.dbList(b.databases, '"databases"');
      if (names.length === 0) throw badRequest('"databases" must name at least one database.');
      await createDatabases(plane, req.params.project!, req.params.id!, names);
      return reply.code(202).send();
    });
    // couchtrove extension: the cuts of an instance's archive (live or deleted), by restore point, a page at
    // a time (default 100, at most 500: each one's manifest is read), oldest first or ?sort=desc.
    api.get('/instances/:id/archive/cuts', async (req: Req) => {
      const q = req.query;
      const bound = (k: 'from' | 'to'): number | null => {
        const raw = one(q[k]);
        if (raw === undefined || raw === '') return null;
        const { t } = restoreTime(raw, k);
        return t.latest ? null : t.ms;
      };
      const l = one(q.limit);
      const sort = one(q.sort) ?? 'asc';
      if (sort !== 'asc' && sort !== 'desc') throw badRequest('sort must be asc (oldest first, the default) or desc.');
      const query = { from: bound('from'), to: bound('to'), limit: l === undefined ? 100 : v.integer(l, 'limit', 1, 500), marker: one(q.marker) || null, newestFirst: sort === 'desc' };
      const r = await listArchiveCuts(plane, req.params.project!, req.params.id!, query);
      const extra: Record<string, string> = { sort };
      for (const k of ['from', 'to'] as const) if (one(q[k])) extra[k] = one(q[k])!;
      return { cuts: r.cuts, ...nextLinks(req, r.more ? [...r.cuts, { id: '' }] : r.cuts, query.limit, `instances/${r.instanceId}/archive/cuts`, extra) };
    });
    // couchtrove extension: one database back from a backup or the instance's archive (docs/control-plane.md).
    api.post('/instances/:id/databases/:db/restore', async (req: Req) => {
      const r = body(req, 'restore');
      const result = await restoreDatabase(plane, req.params.project!, req.params.id!, {
        database: v.dbName(req.params.db, 'database'),
        backup: v.optional(r.backup, (x) => v.ref(x, '"restore"."backup"')),
        time: v.optional(r.restore_time, (x) => v.text(x, '"restore"."restore_time"', 80)),
        as: v.optional(r.as, (x) => v.dbName(x, '"restore"."as"')),
        replace: r.replace === true,
      });
      return { restore: snakeKeys(result) };
    });
    api.delete('/instances/:id/databases/:db', async (req: Req, reply) => {
      await deleteDatabase(plane, req.params.project!, req.params.id!, v.dbName(req.params.db, 'database'));
      return reply.code(202).send();
    });

    // Users: Trove addresses MySQL users as name@host; CouchDB users have no host, so "@%" is ignored.
    const userParam = (req: Req): string => v.userName((req.params.user ?? '').replace(/@%?$/, ''), 'user');
    // Each database carries the user's role on it (couchtrove's addition: admin may write design documents).
    const userView = (u: UserAccess): Record<string, unknown> => ({ name: u.name, host: '%', databases: u.databases.map((name) => ({ name, role: u.roles[name] ?? 'member' })) });
    api.get('/instances/:id/users', async (req: Req) => {
      const users = await listUsers(plane, req.params.project!, req.params.id!);
      const { names: shown, links: l } = pageNames(req, users.map((u) => u.name), `instances/${req.params.id}/users`) as { names: string[]; links: unknown };
      return { users: shown.map((n) => userView(users.find((u) => u.name === n)!)), links: l };
    });
    const parseUsers = (b: v.Obj, needPassword: boolean): UserSpec[] => {
      const list = v.arr(b.users, '"users"');
      if (list.length === 0) throw badRequest('"users" must name at least one user.');
      const users = list.map((u, i) => {
        const o = v.obj(u, `"users"[${i}]`);
        return {
          name: v.userName(o.name, `"users"[${i}].name`),
          password: needPassword || o.password !== undefined ? v.password(o.password, `"users"[${i}].password`) : '',
          ...userAccess(o, i),
        };
      });
      if (new Set(users.map((u) => u.name)).size !== users.length) throw badRequest('"users": the same user is given twice.');
      return users;
    };
    api.post('/instances/:id/users', async (req: Req, reply) => {
      const users = parseUsers(v.obj(req.body ?? null, 'The request body'), true);
      await createUsers(plane, req.params.project!, req.params.id!, users);
      return reply.code(202).send();
    });
    api.put('/instances/:id/users', async (req: Req, reply) => {
      const users = parseUsers(v.obj(req.body ?? null, 'The request body'), true);
      await changePasswords(plane, req.params.project!, req.params.id!, users);
      return reply.code(202).send();
    });
    api.get('/instances/:id/users/:user', async (req: Req) => ({ user: userView(await getUser(plane, req.params.project!, req.params.id!, userParam(req))) }));
    api.put('/instances/:id/users/:user', async (req: Req, reply) => {
      const u = body(req, 'user');
      const name = userParam(req);
      if (u.name !== undefined && u.name !== name) throw badRequest('Renaming a CouchDB user is not supported: create a new user.');
      if (u.password === undefined) throw badRequest('"user" needs "password".');
      await changePasswords(plane, req.params.project!, req.params.id!, [{ name, password: v.password(u.password, '"user"."password"') }]);
      return reply.code(202).send();
    });
    api.delete('/instances/:id/users/:user', async (req: Req, reply) => {
      await deleteUser(plane, req.params.project!, req.params.id!, userParam(req));
      return reply.code(202).send();
    });
    api.get('/instances/:id/users/:user/databases', async (req: Req) => {
      const u = await getUser(plane, req.params.project!, req.params.id!, userParam(req));
      return { databases: u.databases.map((name) => ({ name, role: u.roles[name] ?? 'member' })) };
    });
    api.put('/instances/:id/users/:user/databases', async (req: Req, reply) => {
      const b = v.obj(req.body ?? null, 'The request body');
      // Trove's body has no role: member. couchtrove takes "role" for the call, or on each database entry.
      const { databases, adminOf } = v.accessList(b.databases, '"databases"', b.role);
      if (databases.length === 0) throw badRequest('"databases" must name at least one database.');
      const members = databases.filter((d) => !adminOf.includes(d));
      for (const [role, names] of [['member', members], ['admin', adminOf]] as const) {
        if (names.length) await grantAccess(plane, req.params.project!, req.params.id!, userParam(req), names, role);
      }
      return reply.code(202).send();
    });
    api.delete('/instances/:id/users/:user/databases/:db', async (req: Req, reply) => {
      await revokeAccess(plane, req.params.project!, req.params.id!, userParam(req), v.dbName(req.params.db, 'database'));
      return reply.code(202).send();
    });

    // Root
    api.post('/instances/:id/root', async (req: Req) => {
      const b = req.body === undefined || req.body === null ? {} : v.obj(req.body, 'The request body');
      // python-troveclient sends {"password": ...}; older clients {"root_password": ...} or {"user": {"password": ...}}.
      const pw = b.password ?? b.root_password ?? (v.isObj(b.user) ? b.user.password : undefined);
      const r = await enableRoot(plane, req.params.project!, req.params.id!, pw === undefined || pw === null ? undefined : v.password(pw, '"root_password"'));
      return { user: { name: r.name, password: r.password } };
    });
    api.get('/instances/:id/root', async (req: Req) => {
      const r = await rootEnabled(plane, req.params.project!, req.params.id!);
      // Trove's answer, and couchtrove's: since when (when the agent enabled root).
      return { rootEnabled: r.enabled, ...(r.since ? { root_enabled_at: r.since } : {}) };
    });
    api.delete('/instances/:id/root', async (req: Req, reply) => {
      await disableRoot(plane, req.params.project!, req.params.id!);
      return reply.code(204).send();
    });

    // Backups
    api.get('/backups', async (req: Req) => {
      const p = page(req);
      const n = byName(req);
      const where: { project_id: string; instance_id?: string; datastore?: string; name?: string } = { project_id: req.params.project!, ...n.where };
      const extra: Record<string, string> = { ...n.extra };
      const inst = one(req.query.instance_id);
      if (inst !== undefined) {
        where.instance_id = inst;
        extra.instance_id = inst;
      }
      const ds = one(req.query.datastore);
      if (ds !== undefined) {
        where.datastore = ds === stableId('datastore', DATASTORE) ? DATASTORE : ds;
        extra.datastore = ds;
      }
      const rows = await store.find('backups', where, { ...p, limit: p.limit + 1 });
      return { backups: rows.slice(0, p.limit).map((b) => backupView(base(req), b)), ...nextLinks(req, rows, p.limit, 'backups', extra) };
    });
    api.post('/backups', async (req: Req, reply) => {
      const b = body(req, 'backup');
      const inc = b.incremental;
      const parent = v.optional(b.parent_id, (x) => v.ref(x, '"parent_id"'));
      if (inc !== undefined && inc !== null && inc !== 0 && inc !== false && inc !== 1 && inc !== true) throw badRequest('"incremental" must be 0 or 1.');
      // couchtrove extension: "cluster" backs up a whole cluster (src/tasks/cluster-backup.ts).
      if (b.cluster !== undefined && b.cluster !== null) {
        if (b.instance !== undefined && b.instance !== null) throw badRequest('Give "instance" or "cluster", not both.');
        const row = await createClusterBackup(plane, req.params.project!, {
          name: v.displayName(b.name, '"name"'), clusterRef: v.ref(b.cluster, '"cluster"'), description: v.optional(b.description, (x) => v.text(x, '"description"')), parentId: parent, incremental: inc === 1 || inc === true,
        });
        return reply.code(202).send({ backup: backupView(base(req), row) });
      }
      const row = await createBackup(plane, req.params.project!, {
        name: v.displayName(b.name, '"name"'),
        instanceId: v.ref(b.instance, '"instance"'),
        description: v.optional(b.description, (x) => v.text(x, '"description"')),
        parentId: parent,
        incremental: inc === 1 || inc === true,
      });
      return reply.code(202).send({ backup: backupView(base(req), row) });
    });
    api.get('/backups/:id', async (req: Req) => ({ backup: backupView(base(req), await plane.backup(req.params.project!, req.params.id!)) }));
    // Verify as a service (couchtrove extension, src/tasks/verify.ts): a backup.verify task reads the backup back whole.
    api.post('/backups/:id/verify', async (req: Req, reply) => {
      const row = await requestVerify(plane, req.params.project!, req.params.id!);
      return reply.code(202).send({ backup: backupView(base(req), row) });
    });
    api.delete('/backups/:id', async (req: Req, reply) => {
      await deleteBackup(plane, req.params.project!, req.params.id!);
      return reply.code(202).send();
    });

    // Flavors
    api.get('/flavors', async (req: Req) => ({ flavors: (await store.find('flavors')).sort((a, b) => a.ram - b.ram || a.id.localeCompare(b.id)).map((f) => flavorView(base(req), req.params.project!, f)) }));
    api.get('/flavors/detail', async (req: Req) => ({ flavors: (await store.find('flavors')).map((f) => flavorView(base(req), req.params.project!, f)) }));
    api.get('/flavors/:id', async (req: Req) => ({ flavor: flavorView(base(req), req.params.project!, await plane.flavor(req.params.id!)) }));

    // Datastores and versions
    const versionsOf = async (ds: string): Promise<Row<'datastore_versions'>[]> => {
      if (ds !== DATASTORE && ds !== stableId('datastore', DATASTORE)) throw notFound(`Datastore ${ds.slice(0, 80)} could not be found.`);
      return store.find('datastore_versions', { datastore: DATASTORE });
    };
    api.get('/datastores', async (req: Req) => ({ datastores: [datastoreView(base(req), req.params.project!, await versionsOf(DATASTORE))] }));
    api.get('/datastores/:ds', async (req: Req) => ({ datastore: datastoreView(base(req), req.params.project!, await versionsOf(req.params.ds!)) }));
    api.get('/datastores/:ds/versions', async (req: Req) => ({ versions: (await versionsOf(req.params.ds!)).filter((x) => x.active === 1).map((x) => versionView(base(req), req.params.project!, x)) }));
    const findVersion = async (ds: string, ref: string): Promise<Row<'datastore_versions'>> => {
      const x = (await versionsOf(ds)).find((r) => r.id === ref || r.name === ref);
      if (!x) throw notFound(`Datastore version ${ref.slice(0, 80)} could not be found.`);
      return x;
    };
    api.get('/datastores/:ds/versions/:version', async (req: Req) => ({ version: versionView(base(req), req.params.project!, await findVersion(req.params.ds!, req.params.version!)) }));
    api.get('/datastores/versions/:version', async (req: Req) => ({ version: versionView(base(req), req.params.project!, await findVersion(DATASTORE, req.params.version!)) }));
    // Configuration parameters: the published catalogue (src/config/couchdb-parameters.ts), the same for
    // every version. Names hold a slash ("couchdb/max_dbs_open"), which the clients send as it is.
    const parameters = async (ds: string, version: string): Promise<Record<string, unknown>> => {
      const x = await findVersion(ds, version);
      return { 'configuration-parameters': COUCHDB_PARAMETERS.map((p) => troveParameterView(p, x.id)) };
    };
    const parameter = async (ds: string, version: string, name: string): Promise<Record<string, unknown>> => {
      const x = await findVersion(ds, version);
      const p = couchdbParameter(name);
      if (!p) throw notFound(`No configuration parameter ${JSON.stringify(name.slice(0, 120))} for ${DATASTORE} ${x.name}.`);
      return troveParameterView(p, x.id);
    };
    api.get('/datastores/versions/:version/parameters', async (req: Req) => parameters(DATASTORE, req.params.version!));
    api.get('/datastores/versions/:version/parameters/*', async (req: Req) => parameter(DATASTORE, req.params.version!, req.params['*']!));
    api.get('/datastores/:ds/versions/:version/parameters', async (req: Req) => parameters(req.params.ds!, req.params.version!));
    api.get('/datastores/:ds/versions/:version/parameters/*', async (req: Req) => parameter(req.params.ds!, req.params.version!, req.params['*']!));

    // Configurations
    const confCount = async (id: string): Promise<number> => (await store.find('instances', { configuration_id: id })).length;
    api.get('/configurations', async (req: Req) => {
      const p = page(req);
      const n = byName(req);
      const rows = await store.find('configurations', { project_id: req.params.project!, ...n.where }, { ...p, limit: p.limit + 1 });
      const views = await Promise.all(rows.slice(0, p.limit).map(async (c) => configurationView(base(req), c, await confCount(c.id), false)));
      return { configurations: views, ...nextLinks(req, rows, p.limit, 'configurations', n.extra) };
    });
    api.post('/configurations', async (req: Req) => {
      const b = body(req, 'configuration');
      const ds = v.optional(b.datastore, (x) => v.obj(x, '"datastore"'));
      if (ds && ds.type !== undefined && ds.type !== null && ds.type !== DATASTORE) throw badRequest(`Datastore ${JSON.stringify(String(ds.type).slice(0, 80))} is not served here: the only datastore is ${DATASTORE}.`);
      const c = await createConfiguration(plane, req.params.project!, {
        name: v.displayName(b.name, '"name"'),
        description: v.optional(b.description, (x) => v.text(x, '"description"')),
        values: b.values ?? {},
        version: ds ? v.optional(ds.version, (x) => v.ref(x, '"datastore"."version"')) : null,
      });
      return { configuration: configurationView(base(req), c, 0, true) };
    });
    api.get('/configurations/:id', async (req: Req) => {
      const c = await plane.configuration(req.params.project!, req.params.id!);
      return { configuration: configurationView(base(req), c, await confCount(c.id), true) };
    });
    api.get('/configurations/:id/instances', async (req: Req) => {
      const c = await plane.configuration(req.params.project!, req.params.id!);
      const rows = await store.find('instances', { configuration_id: c.id, project_id: req.params.project! });
      return { instances: rows.map((i) => ({ id: i.id, name: i.name, links: links(base(req), i.project_id, 'instances', i.id) })), links: [] };
    });
    // PUT replaces the values, PATCH merges them; an attached group's change is rolled out to its instances.
    const changeConfiguration = (replace: boolean) => async (req: Req, reply: FastifyReply): Promise<FastifyReply> => {
      const b = body(req, 'configuration');
      if (replace && b.values === undefined) throw badRequest('"configuration" needs "values" (PUT replaces them all; PATCH changes some).');
      const change: Parameters<typeof updateConfiguration>[3] = { values: b.values ?? {}, replace };
      if (b.name !== undefined) change.name = v.displayName(b.name, '"name"');
      if (b.description !== undefined) change.description = v.optional(b.description, (x) => v.text(x, '"description"'));
      await updateConfiguration(plane, req.params.project!, req.params.id!, change);
      return reply.code(202).send();
    };
    api.put('/configurations/:id', changeConfiguration(true));
    api.patch('/configurations/:id', changeConfiguration(false));
    api.delete('/configurations/:id', async (req: Req, reply) => {
      await deleteConfiguration(plane, req.params.project!, req.params.id!);
      return reply.code(202).send();
    });

    // Guest logs: CouchDB's log (src/tasks/logs.ts).
    api.get('/instances/:id/log', async (req: Req) => ({ logs: await listLogs(plane, req.params.project!, req.params.id!) }));
    api.post('/instances/:id/log', async (req: Req) => {
      const b = v.obj(req.body ?? null, 'The request body');
      const flag = (k: string): boolean => {
        const x = b[k];
        if (x === undefined || x === null || x === 0 || x === false) return false;
        if (x === 1 || x === true) return true;
        throw badRequest(`"${k}" must be 0 or 1.`);
      };
      if (typeof b.name !== 'string' || b.name === '') throw badRequest('"name" (the log\'s name) is required.');
      return { log: await logAction(plane, req.params.project!, req.params.id!, { name: b.name, enable: flag('enable'), disable: flag('disable'), publish: flag('publish'), discard: flag('discard') }) };
    });
    api.get('/instances/:id/log/:name/tail', async (req: Req) => {
      const l = one(req.query.lines);
      return { log: await tailLog(plane, req.params.project!, req.params.id!, req.params.name!, l === undefined ? 50 : v.integer(l, 'lines', 0, 100_000)) };
    });

    // Backup schedules (src/api/schedules.ts)
    registerScheduleRoutes(api, plane);
    // Trove calls couchtrove does not implement: 501 naming the call (src/api/unsupported.ts)
    registerClusterRoutes(api, plane, base);
    registerUnsupportedRoutes(api, plane);
  }, { prefix: '/v1.0/:project' });

  return app;
}
