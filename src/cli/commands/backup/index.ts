// `couchtrove backup list|show|create|delete` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, table, waitFor, type JsonObject } from '../../../api/client.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;
const COLS = ['id', 'name', 'status', 'instance_id', 'size_bytes', 'checksum', 'created'];

export const backupCommands: AnyCommand[] = [
  defineCommand({
    path: ['backup', 'list'], summary: 'List backups (--instance, --datastore filters)', required: [], optional: [...API, 'instanceRef', 'datastoreFilter', 'pageLimit', 'pageMarker'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const q = new URLSearchParams();
      if (o.instanceRef) q.set('instance_id', await c.instanceId(o.instanceRef));
      if (o.datastoreFilter) q.set('datastore', o.datastoreFilter);
      const rows = await c.list(`/backups${q.size ? `?${q.toString()}` : ''}`, 'backups', o.pageLimit, o.pageMarker);
      print(io, o.json, { backups: rows }, () => table(rows, COLS));
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'show'], summary: 'Show a backup: status, size, checksum, progress while running', required: ['backupId'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const b = (await c.get(`/backups/${encodeURIComponent(o.backupId)}`)).backup as JsonObject;
      print(io, o.json, { backup: b }, () => details(b));
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'create'], summary: 'Back up an instance (--incremental or --parent ID: only what changed since the parent)', required: ['instanceRef', 'resourceName'], optional: [...API, 'description', 'incremental', 'parent', 'wait'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const backup: JsonObject = { name: o.resourceName, instance: id, ...(o.description !== undefined ? { description: o.description } : {}) };
      if (o.parent !== undefined) backup.parent_id = o.parent;
      else if (o.incremental) backup.incremental = 1;
      let b = (await c.request('POST', '/backups', { backup })).backup as JsonObject;
      if (o.wait) b = (await waitFor(c, io, 'backup', b.id as string)) ?? b;
      print(io, o.json, { backup: b }, () => details(b));
      return o.wait && b.status !== 'COMPLETED' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['backup', 'delete'], summary: 'Delete a backup (refused while it runs)', required: ['backupId'], optional: [...API, 'wait'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      await c.request('DELETE', `/backups/${encodeURIComponent(o.backupId)}`);
      if (o.wait) await waitFor(c, io, 'backup', o.backupId, { gone: true });
      print(io, o.json, { id: o.backupId, deleted: true }, () => `backup ${o.backupId} ${o.wait ? 'deleted' : 'is being deleted'}\n`);
      return 0;
    },
  }),
];
