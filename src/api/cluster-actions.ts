// Trove's cluster actions, POST /clusters/{id} (trove/cluster/service.py `action`): {"grow": [{"flavorRef",
// "volume": {"size"}}, ...]} and {"shrink": [{"id"}, ...]} answer 202 with the cluster, its task then
// GROWING_CLUSTER / SHRINKING_CLUSTER until NONE (docs/cluster.md, "Grow and shrink"). A refusal is a 400
// (or 422 while the cluster is busy) naming why: the clients print the message.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ControlPlane } from '../tasks/control.js';
import { growCluster, shrinkCluster } from '../tasks/cluster-resize.js';
import { badRequest } from '../tasks/errors.js';
import { clusterView } from './clusters.js';
import { notImplementedCall } from './unsupported.js';
import * as v from './validate.js';

type Req = FastifyRequest<{ Params: Record<string, string> }>;

/** Actions Trove has that couchtrove does not do for CouchDB clusters. */
const OTHER_ACTIONS: Record<string, string> = { upgrade: 'Cluster upgrade', 'reset-status': 'Cluster reset status', add_shard: 'Cluster add shard' };

export function registerClusterActions(api: FastifyInstance, plane: ControlPlane, base: (req: FastifyRequest) => string): void {
  api.post('/clusters/:id', async (req: Req, reply: FastifyReply) => {
    const b = v.obj(req.body ?? null, 'The request body');
    const keys = Object.keys(b);
    if (keys.length !== 1) throw badRequest(`A cluster action is one of "grow" or "shrink"; ${keys.length === 0 ? 'none' : keys.map((k) => JSON.stringify(k.slice(0, 40))).join(', ')} given.`);
    const action = keys[0]!;
    const project = req.params.project!;
    let c;
    if (action === 'grow') {
      const instances = v.arr(b.grow, '"grow"').map((x, i) => {
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
      c = await growCluster(plane, project, req.params.id!, instances);
    } else if (action === 'shrink') {
      const ids = v.arr(b.shrink, '"shrink"').map((x, i) => v.ref(v.obj(x, `"shrink"[${i}]`).id, `"shrink"[${i}]."id"`));
      c = await shrinkCluster(plane, project, req.params.id!, ids);
    } else if (OTHER_ACTIONS[action]) {
      throw notImplementedCall(OTHER_ACTIONS[action], 'POST', '/clusters/{cluster}');
    } else {
      throw badRequest(`Unknown cluster action ${JSON.stringify(action.slice(0, 40))}: couchdb clusters take "grow" and "shrink".`);
    }
    return reply.code(202).send({ cluster: await clusterView(plane, base(req), c) });
  });
}
