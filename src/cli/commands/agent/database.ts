// `couchtrove agent database create|list|delete --couchdb-url URL`: user databases of one CouchDB.
import { defineCommand } from '../../command.js';
import { couchManager, printJson } from './couch-target.js';

export const databaseCreateCommand = defineCommand({
  path: ['agent', 'database', 'create'],
  summary: "Create a database (open to server admins only until access is granted)",
  required: ['couchdbUrl', 'database'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).createDatabase(o.database);
    io.stdout.write(`database ${o.database} created\n`);
    return 0;
  },
});

export const databaseListCommand = defineCommand({
  path: ['agent', 'database', 'list'],
  summary: 'List the user databases (system databases are hidden)',
  required: ['couchdbUrl'],
  optional: ['json'],
  run: async (o, io) => {
    const dbs = await (await couchManager(o.couchdbUrl, io.env)).listDatabases();
    if (o.json) printJson(io, dbs);
    else for (const d of dbs) io.stdout.write(`${d}\n`);
    return 0;
  },
});

export const databaseDeleteCommand = defineCommand({
  path: ['agent', 'database', 'delete'],
  summary: 'Delete a database and all its documents',
  required: ['couchdbUrl', 'database'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).deleteDatabase(o.database);
    io.stdout.write(`database ${o.database} deleted\n`);
    return 0;
  },
});
