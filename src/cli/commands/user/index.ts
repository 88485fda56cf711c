// `couchtrove user list|show|create|delete|grant-access|revoke-access|show-access` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, table, type JsonObject } from '../../../api/client.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;
const u = (name: string): string => encodeURIComponent(name);

/** "orders (admin), logs" from [{name, role}]: the role is named when it is not the default member. */
const withRoles = (dbs: unknown): string =>
  Array.isArray(dbs) ? (dbs as JsonObject[]).map((d) => (d.role === 'admin' ? `${String(d.name)} (admin)` : String(d.name))).join(', ') : '';

export const userCommands: AnyCommand[] = [
  defineCommand({
    path: ['user', 'list'], summary: "List an instance's users", required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = await c.list(`/instances/${id}/users`, 'users');
      print(io, o.json, { users: rows }, () => table(rows.map((r) => ({ ...r, databases: withRoles(r.databases) })), ['name', 'databases']));
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'show'], summary: 'Show a user and its databases', required: ['instanceRef', 'user'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r = (await c.get(`/instances/${id}/users/${u(o.user)}`)).user as JsonObject;
      print(io, o.json, { user: r }, () => details({ ...r, databases: withRoles(r.databases) }));
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'create'], summary: 'Create a user (password from --password or COUCHTROVE_USER_PASSWORD) with access to --databases as member or, with --role admin, database admin', required: ['instanceRef', 'user', 'userPassword'], optional: [...API, 'databases', 'accessRole'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const role = o.accessRole ?? 'member';
      const dbs = (o.databases as string[] | undefined) ?? [];
      await c.request('POST', `/instances/${id}/users`, { users: [{ name: o.user, password: o.userPassword, databases: dbs.map((name) => ({ name, role })) }] });
      print(io, o.json, { instance: id, user: o.user, created: true, ...(dbs.length ? { databases: dbs, role } : {}) }, () => `user ${o.user} created on ${id}${dbs.length ? `, ${role} of ${dbs.join(', ')}` : ''}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'delete'], summary: 'Delete a user', required: ['instanceRef', 'user'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('DELETE', `/instances/${id}/users/${u(o.user)}`);
      print(io, o.json, { instance: id, user: o.user, deleted: true }, () => `user ${o.user} deleted from ${id}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'grant-access'], summary: 'Give a user access to databases (--databases a,b) as member or, with --role admin, database admin (design documents, indexes)', required: ['instanceRef', 'user', 'databases'], optional: [...API, 'accessRole'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const role = o.accessRole ?? 'member';
      await c.request('PUT', `/instances/${id}/users/${u(o.user)}/databases`, { databases: (o.databases as string[]).map((name) => ({ name })), role });
      print(io, o.json, { instance: id, user: o.user, granted: o.databases, role }, () => `user ${o.user} is ${role} of ${(o.databases as string[]).join(', ')}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'revoke-access'], summary: "Remove a user's access to a database", required: ['instanceRef', 'user', 'database'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('DELETE', `/instances/${id}/users/${u(o.user)}/databases/${encodeURIComponent(o.database)}`);
      print(io, o.json, { instance: id, user: o.user, revoked: o.database }, () => `user ${o.user} no longer uses ${o.database}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'show-access'], summary: 'List the databases a user can use', required: ['instanceRef', 'user'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = (await c.get(`/instances/${id}/users/${u(o.user)}/databases`)).databases as JsonObject[];
      print(io, o.json, { databases: rows }, () => table(rows.map((r) => ({ ...r, role: r.role ?? 'member' })), ['name', 'role']));
      return 0;
    },
  }),
];
