// `couchtrove database list|create|delete|restore INSTANCE` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, label, print, table, type JsonObject } from '../../../api/client.js';
import { restoredFromText } from '../instance/index.js';
import { API, BACKUP_BY_NAME } from '../api.js';

export const databaseCommands: AnyCommand[] = [
  defineCommand({
    path: ['database', 'list'], summary: "List an instance's databases", required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = await c.list(`/instances/${id}/databases`, 'databases');
      print(io, o.json, { databases: rows }, () => table(rows, ['name']));
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'create'], summary: 'Create a database', required: ['instanceRef', 'database'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('POST', `/instances/${inst.id}/databases`, { databases: [{ name: o.database }] });
      print(io, o.json, { instance: inst.id, database: o.database, created: true }, () => `database ${o.database} created on ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'delete'], summary: 'Delete a database', required: ['instanceRef', 'database'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('DELETE', `/instances/${inst.id}/databases/${encodeURIComponent(o.database)}`);
      print(io, o.json, { instance: inst.id, database: o.database, deleted: true }, () => `database ${o.database} deleted from ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['database', 'restore'], summary: 'Restore one database from a backup (--backup) or the instance\'s archive (--to-time) into the running instance, under --as NAME or --replace',
    required: ['instanceRef', 'database'], optional: [...API, 'backupId', 'toTime', 'restoreAs', 'replaceDatabase'], positional: 'instanceRef',
    specialise: { backupId: { ...BACKUP_BY_NAME, description: 'The backup (name or id) to take the database from' } },
    run: async (o, io) => {
      if ((o.backupId === undefined) === (o.toTime === undefined)) throw Object.assign(new Error('give exactly one of --backup and --to-time'), { name: 'UsageError' });
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const r: JsonObject = { replace: o.replaceDatabase === true };
      if (o.backupId) r.backup = await c.resolve('backup', o.backupId);
      if (o.toTime) r.restore_time = o.toTime;
      if (o.restoreAs) r.as = o.restoreAs;
      const res = (await c.request('POST', `/instances/${inst.id}/databases/${encodeURIComponent(o.database)}/restore`, { restore: r })).restore as JsonObject;
      const rf = res.restored_from as JsonObject | undefined;
      print(io, o.json, { restore: res }, () => `database ${o.database} restored as ${String(res.as)} on ${label(inst)} from ${String(res.from)}: ${String(res.doc_count)} documents (${(Number(res.total_ms) / 1000).toFixed(1)} s)\n${rf ? `restored from: ${restoredFromText(rf)}\n` : ''}`);
      return 0;
    },
  }),
];
