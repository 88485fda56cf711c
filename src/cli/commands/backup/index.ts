// `couchtrove backup list|show|create|verify|delete` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, label, moreHint, print, table, waitFor, type JsonObject } from '../../../api/client.js';
import { CouchtroveError } from '../../../util/errors.js';
import { formatBytes } from '../../progress.js';
import { API, BACKUP_BY_NAME } from '../api.js';
import { instanceOrCluster } from '../cluster/index.js';
// The checksum stays in `show` and --json: 64 hex digits crowd a listing out of a terminal.
// CLUSTER_ID only when a listed backup is a cluster's: most projects have none.
const COLS = ['id', 'name', 'status', 'instance_id', 'cluster_id', 'parent_id', 'size', 'created', 'verify_result'];
const columns = (rows: JsonObject[]): string[] => (rows.some((r) => r.cluster_id) ? COLS : COLS.filter((c) => c !== 'cluster_id'));

/** Newest first, as operators look for the latest backup; ties (same second) by id for a stable order. */
function newestFirst(rows: JsonObject[]): JsonObject[] {
  return [...rows].sort((a, b) => String(b.created).localeCompare(String(a.created)) || String(a.id).localeCompare(String(b.id)));
}

/** A backup as people read it: sizes in bytes units (the API's GB and bytes stay in --json). */
function readable(b: JsonObject): JsonObject {
  const o: JsonObject = { ...b };
  if (typeof b.size_bytes === 'number') {
    o.size = formatBytes(b.size_bytes);
    delete o.size_bytes;
  }
  const p = b.progress as JsonObject | undefined;
  if (p && typeof p.bytes_done === 'number' && typeof p.bytes_total === 'number') o.progress = `${String(p.phase)} ${formatBytes(p.bytes_done)} of ${formatBytes(p.bytes_total)} (${String(p.percent)}%)`;
  return o;
}

export const backupCommands: AnyCommand[] = [
  defineCommand({
    path: ['backup', 'list'], summary: 'List backups, newest first (--limit N: the newest N; an instance as the argument or --instance, --datastore filter)', required: [], optional: [...API, 'instanceRef', 'datastoreFilter', 'pageLimit', 'pageMarker'], positional: 'instanceRef',
    specialise: { pageMarker: { description: 'List the backups older than this one (a listing cut by --limit prints the next marker on stderr)' } },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const q = new URLSearchParams({ limit: '1000' });
      if (o.instanceRef) q.set('instance_id', await c.instanceId(o.instanceRef));
      if (o.datastoreFilter) q.set('datastore', o.datastoreFilter);
      // The API pages oldest first; the newest N are wanted, so the whole list is read and cut here.
      const all = newestFirst(await c.list(`/backups?${q.toString()}`, 'backups'));
      let start = 0;
      if (o.pageMarker !== undefined) {
        start = all.findIndex((b) => b.id === o.pageMarker) + 1;
        if (start === 0) throw new CouchtroveError(`--marker ${o.pageMarker} is not a backup of this list`);
      }
      const rows = all.slice(start, o.pageLimit ? start + o.pageLimit : undefined);
      const next = o.pageLimit && start + o.pageLimit < all.length ? (rows[rows.length - 1]!.id as string) : undefined;
      // Human sizes in the table (as `agent list`); --json keeps the API's raw numbers.
      print(io, o.json, { backups: rows }, () => table(rows.map(readable), columns(rows)));
      moreHint(io, next);
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'show'], summary: 'Show a backup: status, size, checksum, progress while running', required: ['backupId'], optional: [...API], positional: 'backupId', specialise: { backupId: BACKUP_BY_NAME },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const b = (await c.get(`/backups/${encodeURIComponent(await c.resolve('backup', o.backupId))}`)).backup as JsonObject;
      print(io, o.json, { backup: b }, () => details(readable(b)));
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'create'], summary: 'Back up an instance (--incremental or --parent NAME, ID or latest: only what changed since the parent), or a whole cluster (--cluster: one copy of every shard range)', required: ['resourceName'], optional: [...API, 'instanceRef', 'clusterRef', 'description', 'incremental', 'parent', 'wait'], positional: 'instanceRef',
    specialise: {
      resourceName: { description: 'Name of the new backup' },
      description: { description: 'Description of the new backup' },
      parent: { parse: BACKUP_BY_NAME.parse, description: "Take an incremental backup on top of this backup (name or id; 'latest': the instance's latest completed backup): only what each file gained since is stored" },
    },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const target = await instanceOrCluster(c, o, 'give the instance to back up');
      const backup: JsonObject = { name: o.resourceName, [target.kind]: target.id, ...(o.description !== undefined ? { description: o.description } : {}) };
      // 'latest' is the API's incremental: on the instance's latest COMPLETED backup.
      if (o.parent !== undefined && o.parent !== 'latest') backup.parent_id = await c.resolve('backup', o.parent);
      else if (o.incremental || o.parent === 'latest') backup.incremental = 1;
      let b = (await c.request('POST', '/backups', { backup })).backup as JsonObject;
      if (o.wait) b = (await waitFor(c, io, 'backup', b.id as string)) ?? b;
      print(io, o.json, { backup: b }, () => details(readable(b)));
      return o.wait && b.status !== 'COMPLETED' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['backup', 'verify'],
    summary: 'Read a backup back whole in the control plane (every object, checksum and the manifest\'s authentication); sets verified_at and verify_result (ok, or what is wrong, naming the object)',
    required: ['backupId'], optional: [...API, 'wait'], positional: 'backupId', specialise: { backupId: BACKUP_BY_NAME },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const named = await c.find('backup', o.backupId);
      const id = named.id;
      let b = (await c.request('POST', `/backups/${encodeURIComponent(id)}/verify`)).backup as JsonObject;
      const end = Date.now() + 24 * 3600_000;
      while (o.wait && b.verify_result === 'running' && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 1000));
        b = (await c.get(`/backups/${encodeURIComponent(id)}`)).backup as JsonObject;
      }
      print(io, o.json, { backup: b }, () => (o.wait ? details(b) : `backup ${label(named)} is being verified: backup show ${id} gives verify_result\n`));
      return o.wait && b.verify_result !== 'ok' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['backup', 'delete'], summary: 'Delete a backup (refused while it runs)', required: ['backupId'], optional: [...API, 'wait'], positional: 'backupId', specialise: { backupId: BACKUP_BY_NAME },
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const b = await c.find('backup', o.backupId);
      await c.request('DELETE', `/backups/${encodeURIComponent(b.id)}`);
      if (o.wait) await waitFor(c, io, 'backup', b.id, { gone: true });
      print(io, o.json, { id: b.id, name: b.name, deleted: true }, () => `backup ${label(b)} ${o.wait ? 'deleted' : 'is being deleted'}\n`);
      return 0;
    },
  }),
];
