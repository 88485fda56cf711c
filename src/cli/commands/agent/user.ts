// `couchtrove agent user create|list|show|delete|grant|revoke|password --couchdb-url URL`: users in
// _users and their access (members of each database's _security, changed by read-modify-write).
import { defineCommand } from '../../command.js';
import { couchManager, printJson, readPasswordFromStdin } from './couch-target.js';
import type { UserInfo } from '../../../agent/protocol.js';

const show = (u: UserInfo) => `${u.name}\troles: ${u.roles.join(',') || '-'}\tdatabases: ${u.databases.join(',') || '-'}\n`;

export const userCreateCommand = defineCommand({
  path: ['agent', 'user', 'create'],
  summary: 'Create a user, with roles and access to databases (password from stdin, or generated and printed)',
  required: ['couchdbUrl', 'user'],
  optional: ['roles', 'databases', 'passwordStdin'],
  run: async (o, io) => {
    const password = o.passwordStdin ? await readPasswordFromStdin() : (await import('../../../agent/manage.js')).generatePassword();
    await (await couchManager(o.couchdbUrl, io.env)).createUser({ name: o.user, password, roles: o.roles, databases: o.databases });
    io.stdout.write(o.passwordStdin ? `user ${o.user} created\n` : `user ${o.user} created; password: ${password}\n`);
    return 0;
  },
});

export const userListCommand = defineCommand({
  path: ['agent', 'user', 'list'],
  summary: 'List users with their roles and databases',
  required: ['couchdbUrl'],
  optional: ['json'],
  run: async (o, io) => {
    const users = await (await couchManager(o.couchdbUrl, io.env)).listUsers();
    if (o.json) printJson(io, users);
    else for (const u of users) io.stdout.write(show(u));
    return 0;
  },
});

export const userShowCommand = defineCommand({
  path: ['agent', 'user', 'show'],
  summary: 'Show one user: roles and databases',
  required: ['couchdbUrl', 'user'],
  optional: ['json'],
  run: async (o, io) => {
    const u = await (await couchManager(o.couchdbUrl, io.env)).getUser(o.user);
    if (o.json) printJson(io, u);
    else io.stdout.write(show(u));
    return 0;
  },
});

export const userDeleteCommand = defineCommand({
  path: ['agent', 'user', 'delete'],
  summary: 'Delete a user, removing it from every database _security first',
  required: ['couchdbUrl', 'user'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).deleteUser(o.user);
    io.stdout.write(`user ${o.user} deleted\n`);
    return 0;
  },
});

export const userGrantCommand = defineCommand({
  path: ['agent', 'user', 'grant'],
  summary: 'Give a user access to databases (adds it to their _security members, keeping every other entry)',
  required: ['couchdbUrl', 'user', 'databases'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).grantAccess(o.user, o.databases);
    io.stdout.write(`user ${o.user} has access to ${o.databases.join(', ')}\n`);
    return 0;
  },
});

export const userRevokeCommand = defineCommand({
  path: ['agent', 'user', 'revoke'],
  summary: "Take a user's access to one database away",
  required: ['couchdbUrl', 'user', 'database'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).revokeAccess(o.user, o.database);
    io.stdout.write(`user ${o.user} no longer has access to ${o.database}\n`);
    return 0;
  },
});

export const userPasswordCommand = defineCommand({
  path: ['agent', 'user', 'password'],
  summary: "Change a user's password (from stdin, or generated and printed)",
  required: ['couchdbUrl', 'user'],
  optional: ['passwordStdin'],
  run: async (o, io) => {
    const password = o.passwordStdin ? await readPasswordFromStdin() : (await import('../../../agent/manage.js')).generatePassword();
    await (await couchManager(o.couchdbUrl, io.env)).changePassword(o.user, password);
    io.stdout.write(o.passwordStdin ? `password of ${o.user} changed\n` : `password of ${o.user} changed; new password: ${password}\n`);
    return 0;
  },
});
