// Trove's cluster actions: POST /clusters/{id} with one key naming the action (trove/cluster/service.py
// action(), trove/cluster/models.py Cluster.action()), answered 202 with the cluster. couchtrove does
// "restart" (a rolling restart, src/tasks/cluster-restart.ts); Trove's other actions answer 501 naming
// them until they are done, and a key Trove does not know answers 400 as Trove's does.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Row } from '../state/index.js';
import type { ControlPlane } from '../tasks/control.js';
import { restartCluster } from '../tasks/cluster-restart.js';
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
};

/** Trove's other cluster actions (python-troveclient sends grow, shrink, upgrade, reset-status). */
const NOT_YET = ['grow', 'shrink', 'upgrade', 'reset-status', 'add_shard', 'configuration_attach', 'configuration_detach'];

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
