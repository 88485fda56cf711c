// `couchtrove database list|create|delete` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, print, table } from '../../../api/client.js';

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
];
