// Trove's cluster actions: POST /clusters/{id} with one key naming the action (trove/cluster/service.py
// action(), trove/cluster/models.py Cluster.action()), answered 202 with the cluster. couchtrove does
// "restart" (a rolling restart, src/tasks/cluster-restart.ts), "grow" ({"grow": [{"flavorRef", "volume":
// {"size"}}, ...]}), "shrink" ({"shrink": [{"id"}, ...]}, src/tasks/cluster-resize.ts) and "reset-status"
// (src/tasks/cluster-reset.ts); Trove's other actions answer 501 naming them, and a key Trove does not know
// answers 400 as Trove's does. A refusal is a 400 (or 422 while the cluster is busy) naming why: the clients
// print the message.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Row } from '../state/index.js';
import type { ControlPlane } from '../tasks/control.js';
import { restartCluster } from '../tasks/cluster-restart.js';
import { growCluster, shrinkCluster } from '../tasks/cluster-resize.js';
import { resetClusterStatus } from '../tasks/cluster-reset.js';
import { findCluster } from '../tasks/clusters.js';
import { badRequest } from '../tasks/errors.js';
import { notImplementedCall } from './unsupported.js';
import * as v from './validate.js';

type Req = FastifyRequest<{ Params: Record<string, string> }>;

/** One action: its parameter (the value under its key) in, the cluster it now holds out. */
export type ClusterAction = (plane: ControlPlane, projectId: string, clusterRef: string, param: unknown) => Promise<Row<'clusters'>>;

export const CLUSTER_ACTIONS: Record<string, ClusterAction> = {
  restart: async (plane, projectId, ref, param) => {
    if (param !== null && param !== undefined) v.obj(param, '"restart"');
    return restartCluster(plane, projectId, ref);
  },
  grow: async (plane, projectId, ref, param) => {
    const instances = v.arr(param, '"grow"').map((x, i) => {
      const o = v.obj(x, `"grow"[${i}]`);
      for (const k of ['nics', 'availability_zone', 'modules', 'type', 'region', 'related_to']) {
        const val = o[k];
        if (val !== undefined && val !== null && !(Array.isArray(val) && val.length === 0)) throw badRequest(`"grow"[${i}]."${k}" is not supported by the ${plane.compute.name} compute driver for clusters.`);
      }
      // The name of a new member is the cluster's <name>-member-<k>, as at create.
      if (o.name !== undefined && o.name !== null) throw badRequest(`"grow"[${i}]."name": members are named <cluster>-member-<k>; a name of their own is not supported.`);
      const volume = v.optional(o.volume, (y) => v.obj(y, `"grow"[${i}]."volume"`));
      // The clients send the size as typed: a string ("1").
      const size = volume?.size === undefined || volume.size === null ? null : v.integer(typeof volume.size === 'string' && /^\d+$/.test(volume.size) ? Number(volume.size) : volume.size, `"grow"[${i}]."volume"."size"`, 1, 1 << 20);
      return { flavorRef: v.ref(o.flavorRef, `"grow"[${i}]."flavorRef"`), volumeSize: size };
    });
    return growCluster(plane, projectId, ref, instances);
  },
  'reset-status': async (plane, projectId, ref, param) => {
    if (param !== null && param !== undefined) v.obj(param, '"reset-status"');
    return resetClusterStatus(plane, projectId, ref);
  },
  shrink: async (plane, projectId, ref, param) => {
    const ids = v.arr(param, '"shrink"').map((x, i) => v.ref(v.obj(x, `"shrink"[${i}]`).id, `"shrink"[${i}]."id"`));
    return shrinkCluster(plane, projectId, ref, ids);
  },
};

/** Trove's other cluster actions (python-troveclient also sends upgrade). */
const NOT_YET = ['upgrade', 'add_shard', 'configuration_attach', 'configuration_detach'];

export function registerClusterActionRoute(
  api: FastifyInstance,
  plane: ControlPlane,
  view: (req: FastifyRequest, c: Row<'clusters'>) => Promise<Record<string, unknown>>,
): void {
  api.post('/clusters/:id', async (req: Req, reply: FastifyReply) => {
    // An unknown cluster is a 404 whatever the action (clients look a name up on a 404).
    await findCluster(plane, req.params.project!, req.params.id!);
    const body = v.obj(req.body ?? null, 'The request body');
    const keys = Object.keys(body);
    if (keys.length !== 1) throw badRequest(`A cluster action is one key naming it (one of ${[...Object.keys(CLUSTER_ACTIONS), ...NOT_YET].join(', ')}); ${keys.length} given.`);
    const name = keys[0]!;
    const action = CLUSTER_ACTIONS[name];
    if (!action) {
      if (NOT_YET.includes(name)) throw notImplementedCall(`Cluster action ${name}`, 'POST', '/clusters/{cluster}');
      throw badRequest(`Action ${JSON.stringify(name.slice(0, 40))} not supported.`);
    }
    const c = await action(plane, req.params.project!, req.params.id!, body[name]);
    return reply.code(202).send({ cluster: await view(req, c) });
  });
}
