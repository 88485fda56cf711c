// `couchtrove user list|show|create|update|delete|grant-access|revoke-access|show-access INSTANCE` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, label, print, table, type JsonObject } from '../../../api/client.js';
import { ACCESS_DATABASES, API } from '../api.js';
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
    specialise: { databases: ACCESS_DATABASES },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const role = o.accessRole ?? 'member';
      const dbs = (o.databases as string[] | undefined) ?? [];
      await c.request('POST', `/instances/${inst.id}/users`, { users: [{ name: o.user, password: o.userPassword, databases: dbs.map((name) => ({ name, role })) }] });
      print(io, o.json, { instance: inst.id, user: o.user, created: true, ...(dbs.length ? { databases: dbs, role } : {}) }, () => `user ${o.user} created on ${label(inst)}${dbs.length ? `, ${role} of ${dbs.join(', ')}` : ''}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'update'], summary: "Change a user's password (from --password or COUCHTROVE_USER_PASSWORD)", required: ['instanceRef', 'user', 'userPassword'], optional: [...API], positional: 'instanceRef',
    specialise: { userPassword: { description: "The user's new password (prefer COUCHTROVE_USER_PASSWORD: flags show in process listings)" } },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('PUT', `/instances/${inst.id}/users/${u(o.user)}`, { user: { password: o.userPassword } });
      print(io, o.json, { instance: inst.id, user: o.user, updated: true }, () => `the password of user ${o.user} on ${label(inst)} is changed\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'delete'], summary: 'Delete a user', required: ['instanceRef', 'user'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('DELETE', `/instances/${inst.id}/users/${u(o.user)}`);
      print(io, o.json, { instance: inst.id, user: o.user, deleted: true }, () => `user ${o.user} deleted from ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'grant-access'], summary: 'Give a user access to databases (--databases a,b) as member or, with --role admin, database admin (design documents, indexes)', required: ['instanceRef', 'user', 'databases'], optional: [...API, 'accessRole'], positional: 'instanceRef',
    specialise: { databases: ACCESS_DATABASES }, aliases: { database: 'databases' },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const role = o.accessRole ?? 'member';
      await c.request('PUT', `/instances/${inst.id}/users/${u(o.user)}/databases`, { databases: (o.databases as string[]).map((name) => ({ name })), role });
      print(io, o.json, { instance: inst.id, user: o.user, granted: o.databases, role }, () => `user ${o.user} is ${role} of ${(o.databases as string[]).join(', ')} on ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['user', 'revoke-access'], summary: "Remove a user's access to databases (--databases a,b)", required: ['instanceRef', 'user', 'databases'], optional: [...API], positional: 'instanceRef',
    // --database: the flag revoke-access took before it took a list, as grant-access does.
    specialise: { databases: { description: 'Comma-separated names of the databases the user loses access to' } }, aliases: { database: 'databases' },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const dbs = o.databases as string[];
      for (const db of dbs) await c.request('DELETE', `/instances/${inst.id}/users/${u(o.user)}/databases/${encodeURIComponent(db)}`);
      print(io, o.json, { instance: inst.id, user: o.user, revoked: dbs }, () => `user ${o.user} no longer uses ${dbs.join(', ')} on ${label(inst)}\n`);
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
