// `couchtrove schedule create|list|delete`: per-instance backup schedules (Trove's schedule-create,
// schedule-list, schedule-delete) through couchtrove's /instances/{id}/schedules endpoints. The API
// client is loaded inside run(): other commands do not pay for it.
import { defineCommand, type AnyCommand } from '../../command.js';
import type { JsonObject } from '../../../api/client.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;
const COLS = ['id', 'name', 'pattern', 'incremental', 'keep_last', 'keep_daily', 'keep_weekly', 'verify', 'next_run', 'last_result'];

export const scheduleCommands: AnyCommand[] = [
  defineCommand({
    path: ['schedule', 'create'],
    summary: 'Back up an instance on a cron pattern (UTC), full or --incremental, with optional retention (--keep-last/--keep-daily/--keep-weekly) applied after each run',
    required: ['instanceRef', 'schedulePattern', 'resourceName'],
    optional: [...API, 'description', 'incremental', 'keepLast', 'keepDaily', 'keepWeekly', 'scheduleVerify'],
    run: async (o, io) => {
      const { TroveApiClient, details, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const schedule: Record<string, string | number> = { name: o.resourceName, pattern: o.schedulePattern, incremental: o.incremental ? 1 : 0 };
      if (o.description !== undefined) schedule.description = o.description;
      if (o.keepLast !== undefined) schedule.keep_last = o.keepLast;
      if (o.keepDaily !== undefined) schedule.keep_daily = o.keepDaily;
      if (o.keepWeekly !== undefined) schedule.keep_weekly = o.keepWeekly;
      if (o.scheduleVerify) schedule.verify = 1;
      const s = (await c.request('POST', `/instances/${encodeURIComponent(id)}/schedules`, { schedule })).schedule as JsonObject;
      print(io, o.json, { schedule: s }, () => details(s));
      return 0;
    },
  }),
  defineCommand({
    path: ['schedule', 'list'], summary: "List an instance's backup schedules", required: ['instanceRef'], optional: [...API],
    run: async (o, io) => {
      const { TroveApiClient, print, table } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = ((await c.get(`/instances/${encodeURIComponent(id)}/schedules`)).schedules ?? []) as Array<JsonObject>;
      print(io, o.json, { schedules: rows }, () => table(rows, COLS));
      return 0;
    },
  }),
  defineCommand({
    path: ['schedule', 'delete'], summary: 'Delete a backup schedule (its backups stay)', required: ['instanceRef', 'scheduleId'], optional: [...API],
    run: async (o, io) => {
      const { TroveApiClient, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const sid = await c.scheduleId(id, o.scheduleId);
      await c.request('DELETE', `/instances/${encodeURIComponent(id)}/schedules/${encodeURIComponent(sid)}`);
      print(io, o.json, { id: sid, deleted: true }, () => `schedule ${sid} deleted\n`);
      return 0;
    },
  }),
];
