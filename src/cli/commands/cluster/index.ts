// `couchtrove cluster create|show|list|delete|restart|grow|shrink` against the API (docs/cluster.md).
import { setTimeout as sleep } from 'node:timers/promises';
import { defineCommand, type AnyCommand, type CommandIO } from '../../command.js';
import { ApiError, TroveApiClient, details, print, table, type JsonObject } from '../../../api/client.js';
import { API, BACKUP_BY_NAME } from '../api.js';

/** One line per row: the cluster's task, members and where to connect. */
function rowOf(c: JsonObject): JsonObject {
  const members = (c.instances as JsonObject[] | undefined) ?? [];
  return { id: c.id, name: c.name, task: (c.task as JsonObject).name, members: members.length, active: members.filter((m) => m.status === 'ACTIVE').length };
}

function showText(c: JsonObject): string {
  const members = (c.instances as JsonObject[] | undefined) ?? [];
  const fault = c.fault as JsonObject | undefined;
  const head = details({ id: c.id, name: c.name, task: (c.task as JsonObject).name, datastore: `${String((c.datastore as JsonObject).type)} ${String((c.datastore as JsonObject).version)}`, shards: `n = ${String((c.shards as JsonObject).n)}, q = ${String((c.shards as JsonObject).q)}`, ...(fault ? { fault: fault.message } : {}) });
  return `${head}${table(members.map((m) => ({ id: m.id, name: m.name, status: m.status, couchdb_url: m.couchdb_url ?? '' })), ['id', 'name', 'status', 'couchdb_url'])}`;
}

/** By id, else by name through the list (the API also takes a name, as the clients send it). */
export async function findCluster(c: TroveApiClient, ref: string): Promise<JsonObject> {
  return (await c.get(`/clusters/${encodeURIComponent(ref)}`)).cluster as JsonObject;
}

/**
 * What a command acting on an instance (its argument) or a whole cluster (--cluster) names: exactly one of
 * them, by id. `missing` asks for it when neither is given.
 */
export async function instanceOrCluster(c: TroveApiClient, o: { instanceRef?: string | undefined; clusterRef?: string | undefined }, missing: string): Promise<{ kind: 'instance' | 'cluster'; id: string }> {
  if ((o.instanceRef === undefined) === (o.clusterRef === undefined)) {
    throw Object.assign(new Error(o.clusterRef === undefined ? `${missing} (or --cluster ID)` : 'give an instance or --cluster ID, not both'), { name: 'UsageError' });
  }
  return o.clusterRef !== undefined ? { kind: 'cluster', id: (await findCluster(c, o.clusterRef)).id as string } : { kind: 'instance', id: await c.instanceId(o.instanceRef!) };
}

/** Polls until the task is NONE or ERROR (or the cluster is gone, for a delete); one line per change on stderr. */
async function waitCluster(c: TroveApiClient, io: CommandIO, id: string, gone: boolean): Promise<JsonObject | null> {
  let last = '';
  for (;;) {
    let cl: JsonObject;
    try {
      cl = await findCluster(c, id);
    } catch (err) {
      if (gone && err instanceof ApiError && err.status === 404) {
        io.stderr.write(`cluster ${id}: deleted\n`);
        return null;
      }
      throw err;
    }
    const task = String((cl.task as JsonObject).name);
    if (task !== last) io.stderr.write(`cluster ${id}: ${task}\n`);
    last = task;
    if (!gone && (task === 'NONE' || task === 'ERROR')) return cl;
    if (gone && task === 'ERROR') return cl;
    await sleep(1000);
  }
}

export const clusterCommands: AnyCommand[] = [
  defineCommand({
    path: ['cluster', 'create'], summary: 'Create a CouchDB cluster of --nodes members (local driver, Apache CouchDB)',
    required: ['resourceName', 'clusterNodes', 'flavorRef'], optional: [...API, 'volumeSize', 'datastoreVersion', 'backupId', 'wait'], positional: 'resourceName',
    specialise: { resourceName: { description: 'Name of the new cluster' }, backupId: { ...BACKUP_BY_NAME, description: 'Restore this cluster backup (name or id) into the new cluster: its databases, users, _security and design documents' } },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const member: JsonObject = { flavorRef: o.flavorRef, ...(o.volumeSize !== undefined ? { volume: { size: o.volumeSize } } : {}) };
      const body = { name: o.resourceName, datastore: { type: 'couchdb', ...(o.datastoreVersion ? { version: o.datastoreVersion } : {}) }, instances: Array.from({ length: o.clusterNodes }, () => member), ...(o.backupId ? { restorePoint: { backupRef: await c.resolve('backup', o.backupId) } } : {}) };
      let cl = (await c.request('POST', '/clusters', { cluster: body })).cluster as JsonObject;
      if (o.wait) cl = (await waitCluster(c, io, cl.id as string, false)) ?? cl;
      print(io, o.json, { cluster: cl }, () => showText(cl));
      return o.wait && (cl.task as JsonObject).name !== 'NONE' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'show'], summary: 'Show a cluster: its task, members and where to connect', required: ['clusterRef'], optional: [...API], positional: 'clusterRef',
    run: async (o, io) => {
      const cl = await findCluster(new TroveApiClient(o), o.clusterRef);
      print(io, o.json, { cluster: cl }, () => showText(cl));
      return 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'list'], summary: 'List clusters', required: [], optional: [...API],
    run: async (o, io) => {
      const rows = (await new TroveApiClient(o).get('/clusters')).clusters as JsonObject[];
      print(io, o.json, { clusters: rows }, () => table(rows.map(rowOf), ['id', 'name', 'task', 'members', 'active']));
      return 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'restart'], summary: 'Restart every member, one at a time, each back and caught up before the next', required: ['clusterRef'], optional: [...API, 'wait'], positional: 'clusterRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = (await findCluster(c, o.clusterRef)).id as string;
      let cl = (await c.request('POST', `/clusters/${encodeURIComponent(id)}`, { restart: {} })).cluster as JsonObject;
      if (o.wait) cl = (await waitCluster(c, io, id, false)) ?? cl;
      print(io, o.json, { cluster: cl }, () => showText(cl));
      return o.wait && (cl.task as JsonObject).name !== 'NONE' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'grow'], summary: 'Add one member to a cluster (same flavor and size as the others); shard copies move onto it',
    required: ['clusterRef'], optional: [...API, 'flavorRef', 'volumeSize', 'wait'], positional: 'clusterRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const cl0 = await findCluster(c, o.clusterRef);
      const first = ((cl0.instances as JsonObject[] | undefined) ?? [])[0];
      const flavor = o.flavorRef ?? ((first?.flavor as JsonObject | undefined)?.id as string | undefined);
      const size = o.volumeSize ?? ((first?.volume as JsonObject | undefined)?.size as number | undefined);
      const member: JsonObject = { flavorRef: flavor ?? '', ...(size !== undefined ? { volume: { size } } : {}) };
      let cl = (await c.request('POST', `/clusters/${cl0.id as string}`, { grow: [member] })).cluster as JsonObject;
      if (o.wait) cl = (await waitCluster(c, io, cl.id as string, false)) ?? cl;
      print(io, o.json, { cluster: cl }, () => showText(cl));
      return o.wait && (cl.task as JsonObject).name !== 'NONE' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'shrink'], summary: 'Remove a member from a cluster after moving its shard copies to the others',
    required: ['clusterRef', 'instanceRef'], optional: [...API, 'wait'], positional: 'clusterRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const cl0 = await findCluster(c, o.clusterRef);
      let cl = (await c.request('POST', `/clusters/${cl0.id as string}`, { shrink: [{ id: o.instanceRef }] })).cluster as JsonObject;
      if (o.wait) cl = (await waitCluster(c, io, cl.id as string, false)) ?? cl;
      print(io, o.json, { cluster: cl }, () => showText(cl));
      return o.wait && (cl.task as JsonObject).name !== 'NONE' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['cluster', 'delete'], summary: 'Delete a cluster and every member', required: ['clusterRef'], optional: [...API, 'wait'], positional: 'clusterRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const cl = await findCluster(c, o.clusterRef);
      await c.request('DELETE', `/clusters/${cl.id as string}`);
      const left = o.wait ? await waitCluster(c, io, cl.id as string, true) : null;
      print(io, o.json, { id: cl.id, name: cl.name, deleted: left === null }, () => `cluster ${String(cl.name)} (${String(cl.id)}) ${left ? `not deleted: ${JSON.stringify(left.fault)}` : o.wait ? 'deleted' : 'is being deleted'}\n`);
      return left ? 1 : 0;
    },
  }),
];
