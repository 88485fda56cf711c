// `couchtrove backup list|show|create|verify|delete` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, moreHint, print, table, waitFor, type JsonObject } from '../../../api/client.js';
import { formatBytes } from '../../progress.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;
// The checksum stays in `show` and --json: 64 hex digits crowd a listing out of a terminal.
const COLS = ['id', 'name', 'status', 'instance_id', 'parent_id', 'size', 'created', 'verify_result'];

/** Newest first, as operators look for the latest backup; ties (same second) by id for a stable order. */
function newestFirst(rows: JsonObject[]): JsonObject[] {
  return [...rows].sort((a, b) => String(b.created).localeCompare(String(a.created)) || String(a.id).localeCompare(String(b.id)));
}

export const backupCommands: AnyCommand[] = [
  defineCommand({
    path: ['backup', 'list'], summary: 'List backups (--instance, --datastore filters)', required: [], optional: [...API, 'instanceRef', 'datastoreFilter', 'pageLimit', 'pageMarker'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const q = new URLSearchParams();
      if (o.instanceRef) q.set('instance_id', await c.instanceId(o.instanceRef));
      if (o.datastoreFilter) q.set('datastore', o.datastoreFilter);
      const path = `/backups${q.size ? `?${q.toString()}` : ''}`;
      const { rows, next } = o.pageLimit ? await c.page(path, 'backups', o.pageLimit, o.pageMarker) : { rows: await c.list(path, 'backups', undefined, o.pageMarker), next: undefined };
      const sorted = newestFirst(rows);
      // Human sizes in the table (as `agent list`); --json keeps the API's raw numbers.
      print(io, o.json, { backups: sorted }, () => table(sorted.map((r) => ({ ...r, size: typeof r.size_bytes === 'number' ? formatBytes(r.size_bytes) : '' })), COLS));
      moreHint(io, next);
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'show'], summary: 'Show a backup: status, size, checksum, progress while running', required: ['backupId'], optional: [...API], positional: 'backupId',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const b = (await c.get(`/backups/${encodeURIComponent(await c.resolve('backup', o.backupId))}`)).backup as JsonObject;
      print(io, o.json, { backup: b }, () => details(b));
      return 0;
    },
  }),
  defineCommand({
    path: ['backup', 'create'], summary: 'Back up an instance (--incremental or --parent NAME, ID or latest: only what changed since the parent)', required: ['instanceRef', 'resourceName'], optional: [...API, 'description', 'incremental', 'parent', 'wait'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const backup: JsonObject = { name: o.resourceName, instance: id, ...(o.description !== undefined ? { description: o.description } : {}) };
      // 'latest' is the API's incremental: on the instance's latest COMPLETED backup.
      if (o.parent !== undefined && o.parent !== 'latest') backup.parent_id = await c.resolve('backup', o.parent);
      else if (o.incremental || o.parent === 'latest') backup.incremental = 1;
      let b = (await c.request('POST', '/backups', { backup })).backup as JsonObject;
      if (o.wait) b = (await waitFor(c, io, 'backup', b.id as string)) ?? b;
      print(io, o.json, { backup: b }, () => details(b));
      return o.wait && b.status !== 'COMPLETED' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['backup', 'verify'],
    summary: 'Read a backup back whole in the control plane (every object, checksum and the manifest\'s authentication); sets verified_at and verify_result (ok, or what is wrong, naming the object)',
    required: ['backupId'], optional: [...API, 'wait'], positional: 'backupId',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.resolve('backup', o.backupId);
      let b = (await c.request('POST', `/backups/${encodeURIComponent(id)}/verify`)).backup as JsonObject;
      const end = Date.now() + 24 * 3600_000;
      while (o.wait && b.verify_result === 'running' && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 1000));
        b = (await c.get(`/backups/${encodeURIComponent(id)}`)).backup as JsonObject;
      }
      print(io, o.json, { backup: b }, () => (o.wait ? details(b) : `backup ${id} is being verified: backup show ${id} gives verify_result\n`));
      return o.wait && b.verify_result !== 'ok' ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['backup', 'delete'], summary: 'Delete a backup (refused while it runs)', required: ['backupId'], optional: [...API, 'wait'], positional: 'backupId',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.resolve('backup', o.backupId);
      await c.request('DELETE', `/backups/${encodeURIComponent(id)}`);
      if (o.wait) await waitFor(c, io, 'backup', id, { gone: true });
      print(io, o.json, { id, deleted: true }, () => `backup ${id} ${o.wait ? 'deleted' : 'is being deleted'}\n`);
      return 0;
    },
  }),
];
