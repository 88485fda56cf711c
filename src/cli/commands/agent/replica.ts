// `couchtrove agent replica source|follow|sync|status|detach --couchdb-url URL --replication-state FILE`:
// replication of one CouchDB from a primary by hand (docs/replication.md), the same code the agent runs.
// Credentials: the local admin from COUCHDB_USER/COUCHDB_PASSWORD, the primary's replication user from
// COUCHTROVE_PRIMARY_USER/COUCHTROVE_PRIMARY_PASSWORD; never from argv, never printed.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { defineCommand, type CommandIO } from '../../command.js';
import { UsageError } from '../../../config/option.js';
import type { ReplicationManager } from '../../../agent/replication.js';
import { couchClient, printJson } from './couch-target.js';
import type { ReplicationStatus, ReplicationSyncResult } from '../../../agent/protocol.js';

async function writePrivate(file: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  await fsp.writeFile(tmp, content, { mode: 0o600, flag: 'wx' });
  await fsp.rename(tmp, file);
}

async function manager(couchdbUrl: string, stateFile: string, io: CommandIO): Promise<ReplicationManager> {
  const { fileStore, ReplicationManager } = await import('../../../agent/replication.js');
  const couch = await couchClient(couchdbUrl, io.env);
  return new ReplicationManager({ couch, localUrl: couch.baseUrl, store: fileStore(stateFile, writePrivate), log: (l) => io.stderr.write(`${l}\n`) });
}

function printSync(io: CommandIO, r: ReplicationSyncResult, json: boolean | undefined): number {
  if (json) printJson(io, r);
  else {
    for (const [k, v] of Object.entries(r) as [string, string[]][]) if (v.length) io.stdout.write(`${k}: ${v.join('; ')}\n`);
    if (Object.values(r).every((v: string[]) => v.length === 0)) io.stdout.write('nothing to change\n');
  }
  return r.errors.length ? 1 : 0;
}

function printStatus(io: CommandIO, s: ReplicationStatus, json: boolean | undefined): void {
  if (json) return printJson(io, s);
  io.stdout.write(s.role === 'replica' ? `replica of ${s.primaryUrl} (${s.readOnly ? 'read-only' : 'NOT guarded'})\n` : 'standalone\n');
  for (const d of s.databases) {
    const lag = d.lag === null ? 'lag unknown' : `lag ${d.lag}${d.lagAtLeast ? '+' : ''} (${d.lagMethod})`;
    io.stdout.write(`  ${d.database}: ${d.state}, ${lag}${d.error ? `, error: ${d.error}` : ''}\n`);
  }
  for (const e of s.errors) io.stdout.write(`error: ${e}\n`);
}

export const replicaSourceCommand = defineCommand({
  path: ['agent', 'replica', 'source'],
  summary: 'Create (or repair) the replication user on a primary; its password is kept in --replication-state',
  required: ['couchdbUrl', 'replicationState'],
  optional: ['json'],
  run: async (o, io) => {
    const c = await (await manager(o.couchdbUrl, o.replicationState, io)).replicationSource();
    if (o.json) printJson(io, { username: c.username, url: c.url, passwordIn: o.replicationState });
    else io.stdout.write(`replication user ${c.username} ready on ${c.url}; its password is in ${o.replicationState} (user.password)\n`);
    return 0;
  },
});

export const replicaFollowCommand = defineCommand({
  path: ['agent', 'replica', 'follow'],
  summary: 'Make this CouchDB a read-only replica of --primary-url (credentials from COUCHTROVE_PRIMARY_USER/_PASSWORD)',
  required: ['couchdbUrl', 'replicationState', 'primaryUrl'],
  optional: ['primaryName', 'replicaDatabases', 'json'],
  run: async (o, io) => {
    const username = io.env.COUCHTROVE_PRIMARY_USER;
    const password = io.env.COUCHTROVE_PRIMARY_PASSWORD;
    if (!username || !password) throw new UsageError("set COUCHTROVE_PRIMARY_USER and COUCHTROVE_PRIMARY_PASSWORD to the primary's replication user (credentials are never taken from the command line)");
    const r = await (await manager(o.couchdbUrl, o.replicationState, io)).followPrimary({
      primaryUrl: o.primaryUrl,
      username,
      password,
      ...(o.primaryName ? { primaryName: o.primaryName } : {}),
      ...(o.replicaDatabases ? { databases: o.replicaDatabases } : {}),
    });
    return printSync(io, r, o.json);
  },
});

export const replicaSyncCommand = defineCommand({
  path: ['agent', 'replica', 'sync'],
  summary: 'Reconcile once: follow new databases, drop deleted ones, copy _security, restart crashed jobs',
  required: ['couchdbUrl', 'replicationState'],
  optional: ['json'],
  run: async (o, io) => printSync(io, await (await manager(o.couchdbUrl, o.replicationState, io)).sync(), o.json),
});

export const replicaStatusCommand = defineCommand({
  path: ['agent', 'replica', 'status'],
  summary: 'Per database: replication state, error and lag (pending changes)',
  required: ['couchdbUrl', 'replicationState'],
  optional: ['json'],
  run: async (o, io) => {
    const s = await (await manager(o.couchdbUrl, o.replicationState, io)).status();
    printStatus(io, s, o.json);
    return s.errors.length || s.databases.some((d) => d.error) ? 1 : 0;
  },
});

export const replicaDetachCommand = defineCommand({
  path: ['agent', 'replica', 'detach'],
  summary: 'Stop following the primary: replication documents and read-only guards removed; writable again',
  required: ['couchdbUrl', 'replicationState'],
  optional: ['json'],
  run: async (o, io) => {
    const m = await manager(o.couchdbUrl, o.replicationState, io);
    await m.detach();
    printStatus(io, await m.status(), o.json);
    return 0;
  },
});
