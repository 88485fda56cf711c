// Trove's cluster API for CouchDB (docs/cluster.md): create, list, show (with the members as
// `cluster list-instances` reads them), delete, and root on a cluster. python-troveclient's shapes
// (troveclient/v1/clusters.py, root.py; osc/v1/database_clusters.py): {"cluster": {...}} with "task"
// {id, name, description} and "instances"; root enable answers {"user": {name, password}}.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Row } from '../state/index.js';
import { DATASTORE, type ControlPlane } from '../tasks/control.js';
import { CLUSTER_TASKS, clusterMembers, clusterRootEnabled, createCluster, deleteCluster, enableClusterRoot, findCluster } from '../tasks/clusters.js';
import { badRequest } from '../tasks/errors.js';
import { links, troveTime } from './views.js';
import { registerClusterActionRoute } from './cluster-actions.js';
import * as v from './validate.js';

type Req = FastifyRequest<{ Params: Record<string, string> }>;

export async function clusterView(plane: ControlPlane, base: string, c: Row<'clusters'>): Promise<Record<string, unknown>> {
  const members = await clusterMembers(plane, c.id);
  const task = CLUSTER_TASKS[c.task_name];
  const urls = members.filter((m) => m.host && m.port).map((m) => `http://${m.host}:${m.port}`);
  const view: Record<string, unknown> = {
    id: c.id,
    name: c.name,
    task: { id: task.id, name: c.task_name, description: task.description },
    created: troveTime(c.created),
    updated: troveTime(c.updated),
    links: links(base, c.project_id, 'clusters', c.id),
    datastore: { type: c.datastore, version: c.datastore_version },
    instances: members.map((m) => ({
      id: m.id,
      name: m.name,
      type: 'member',
      status: m.status,
      flavor: { id: m.flavor_id, links: links(base, m.project_id, 'flavors', m.flavor_id) },
      volume: { size: m.volume_size },
      ...(m.host ? { ip: [m.host] } : {}),
      ...(m.host && m.port ? { couchdb_url: `http://${m.host}:${m.port}` } : {}),
      links: links(base, m.project_id, 'instances', m.id),
    })),
    ip: [...new Set(members.flatMap((m) => (m.host ? [m.host] : [])))],
    // couchtrove: where to connect (any node serves any request) and the placement defaults.
    couchdb_urls: urls,
    shards: { n: c.n, q: c.q },
  };
  if (c.fault) view.fault = { message: c.fault, created: troveTime(c.updated), details: c.fault };
  return view;
}

export function registerClusterRoutes(api: FastifyInstance, plane: ControlPlane, base: (req: FastifyRequest) => string): void {
  api.post('/clusters', async (req: Req) => {
    const b = v.obj(v.obj(req.body ?? null, 'The request body').cluster, '"cluster"');
    const ds = v.obj(b.datastore, '"datastore"');
    if (ds.type !== DATASTORE) throw badRequest(`Datastore ${JSON.stringify(String(ds.type).slice(0, 80))} is not served here: the only datastore is ${DATASTORE}.`);
    for (const k of ['locality', 'configuration'] as const) {
      if (b[k] !== undefined && b[k] !== null) throw badRequest(`"${k}" is not supported for clusters yet (docs/cluster.md).`);
    }
    const ext = v.optional(b.extended_properties, (x) => v.obj(x, '"extended_properties"'));
    if (ext && Object.keys(ext).length > 0) throw badRequest('"extended_properties" is not supported for couchdb clusters.');
    const instances = v.arr(b.instances, '"instances"').map((x, i) => {
      const o = v.obj(x, `"instances"[${i}]`);
      for (const k of ['nics', 'availability_zone', 'modules', 'type', 'region', 'related_to']) {
        const val = o[k];
        if (val !== undefined && val !== null && !(Array.isArray(val) && val.length === 0)) throw badRequest(`"instances"[${i}]."${k}" is not supported by the ${plane.compute.name} compute driver for clusters.`);
      }
      const volume = v.optional(o.volume, (y) => v.obj(y, `"instances"[${i}]."volume"`));
      // The clients send the size as typed: a string ("1").
      const size = volume?.size === undefined || volume.size === null ? null : v.integer(typeof volume.size === 'string' && /^\d+$/.test(volume.size) ? Number(volume.size) : volume.size, `"instances"[${i}]."volume"."size"`, 1, 1 << 20);
      return { flavorRef: v.ref(o.flavorRef, `"instances"[${i}]."flavorRef"`), volumeSize: size };
    });
    // couchtrove extension: a cluster backup to start from, as "restorePoint" of the cluster or of every
    // instance (as an instance's restorePoint is sent): one backup for all.
    const refs = new Set<string>();
    for (const [where, x] of [['"restorePoint"', b.restorePoint], ...v.arr(b.instances, '"instances"').map((o, i) => [`"instances"[${i}]."restorePoint"`, (o as Record<string, unknown>).restorePoint] as const)] as const) {
      if (x === undefined || x === null) continue;
      const rp = v.obj(x, where);
      v.noUnknown(rp, ['backupRef'], where);
      refs.add(v.ref(rp.backupRef, `${where}."backupRef"`));
    }
    if (refs.size > 1) throw badRequest('Every "restorePoint" of a cluster names the same backup.');
    if (plane.config.couchdb.volumeSupport && instances.some((m) => m.volumeSize === null)) throw badRequest('Every cluster instance needs a volume size: the couchdb datastore has volume_support = true.');
    const c = await createCluster(plane, req.params.project!, {
      name: v.displayName(b.name, '"name"'),
      datastoreVersion: v.optional(ds.version, (x) => v.ref(x, '"datastore"."version"')),
      instances,
      backupRef: [...refs][0] ?? null,
    });
    return { cluster: await clusterView(plane, base(req), c) };
  });
  api.get('/clusters', async (req: Req) => {
    const rows = await plane.store.find('clusters', { project_id: req.params.project! });
    return { clusters: await Promise.all(rows.map((c) => clusterView(plane, base(req), c))), links: [] };
  });
  api.get('/clusters/:id', async (req: Req) => ({ cluster: await clusterView(plane, base(req), await findCluster(plane, req.params.project!, req.params.id!)) }));
  api.delete('/clusters/:id', async (req: Req, reply: FastifyReply) => {
    await deleteCluster(plane, req.params.project!, req.params.id!);
    return reply.code(202).send();
  });
  api.post('/clusters/:id/root', async (req: Req) => {
    const b = req.body === undefined || req.body === null || req.body === '' ? {} : v.obj(req.body, 'The request body');
    const pw = b.password ?? b.root_password;
    const r = await enableClusterRoot(plane, req.params.project!, req.params.id!, pw === undefined || pw === null ? undefined : v.password(pw, '"password"'));
    return { user: { name: r.name, password: r.password } };
  });
  api.get('/clusters/:id/root', async (req: Req) => ({ rootEnabled: await clusterRootEnabled(plane, req.params.project!, req.params.id!) }));
  // Trove's cluster actions (restart, grow, shrink; src/api/cluster-actions.ts).
  registerClusterActionRoute(api, plane, (req, c) => clusterView(plane, base(req), c));
}
