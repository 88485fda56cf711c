// `couchtrove database list|create|delete|restore` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, print, table, type JsonObject } from '../../../api/client.js';
import { restoredFromText } from '../instance/index.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;

export const databaseCommands: AnyCommand[] = [
  defineCommand({
    path: ['database', 'list'], summary: "List an instance's databases", required: ['instanceRef'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = await c.list(`/instances/${id}/databases`, 'databases');
      print(io, o.json, { databases: rows }, () => table(rows, ['name']));
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'create'], summary: 'Create a database', required: ['instanceRef', 'database'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('POST', `/instances/${id}/databases`, { databases: [{ name: o.database }] });
      print(io, o.json, { instance: id, database: o.database, created: true }, () => `database ${o.database} created on ${id}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'delete'], summary: 'Delete a database', required: ['instanceRef', 'database'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('DELETE', `/instances/${id}/databases/${encodeURIComponent(o.database)}`);
      print(io, o.json, { instance: id, database: o.database, deleted: true }, () => `database ${o.database} deleted from ${id}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'restore'], summary: 'Restore one database from a backup (--backup) or the instance\'s archive (--to-time) into the running instance, under --as NAME or --replace',
    required: ['instanceRef', 'database'], optional: [...API, 'backupId', 'toTime', 'restoreAs', 'replaceDatabase'],
    run: async (o, io) => {
      if ((o.backupId === undefined) === (o.toTime === undefined)) throw Object.assign(new Error('give exactly one of --backup and --to-time'), { name: 'UsageError' });
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r: JsonObject = { replace: o.replaceDatabase === true };
      if (o.backupId) r.backup = await c.resolve('backup', o.backupId);
      if (o.toTime) r.restore_time = o.toTime;
      if (o.restoreAs) r.as = o.restoreAs;
      const res = (await c.request('POST', `/instances/${id}/databases/${encodeURIComponent(o.database)}/restore`, { restore: r })).restore as JsonObject;
      const rf = res.restored_from as JsonObject | undefined;
      print(io, o.json, { restore: res }, () => `database ${o.database} restored as ${String(res.as)} on ${id} from ${String(res.from)}: ${String(res.docCount)} documents (${(Number(res.totalMs) / 1000).toFixed(1)} s)\n${rf ? `restored from: ${restoredFromText(rf)}\n` : ''}`);
      return 0;
    },
  }),
];
