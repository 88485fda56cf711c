// `couchtrove schedule create|list|show|pause|resume|delete INSTANCE`: per-instance backup schedules (Trove's
// schedule-create, schedule-list, schedule-delete) through couchtrove's /instances/{id}/schedules endpoints.
// The API client is loaded inside run(): other commands do not pay for it.
import { defineCommand, type AnyCommand } from '../../command.js';
import type { JsonObject } from '../../../api/client.js';
import { API } from '../api.js';

const COLS = ['id', 'name', 'pattern', 'incremental', 'keep_last', 'keep_daily', 'keep_weekly', 'verify', 'paused', 'next_run', 'last_result'];

/** show, pause and resume: one schedule of an instance, by name or id. */
function one(verb: 'show' | 'pause' | 'resume', summary: string): AnyCommand {
  return defineCommand({
    path: ['schedule', verb], summary, required: ['instanceRef', 'scheduleId'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, details, label, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const s = await c.findSchedule(id, o.scheduleId);
      const path = `/instances/${encodeURIComponent(id)}/schedules/${encodeURIComponent(s.id)}`;
      const r = (verb === 'show' ? await c.get(path) : await c.request('PATCH', path, { schedule: { paused: verb === 'pause' } })).schedule as JsonObject;
      print(io, o.json, { schedule: r }, () => (verb === 'show' ? details(r) : `schedule ${label(s)} ${verb === 'pause' ? 'is paused' : `is resumed: next run ${String(r.next_run)}`}\n`));
      return 0;
    },
  });
}

export const scheduleCommands: AnyCommand[] = [
  defineCommand({
    path: ['schedule', 'create'],
    summary: 'Back up an instance on a cron pattern (UTC), full or --incremental, with optional retention (--keep-last/--keep-daily/--keep-weekly) applied after each run',
    required: ['instanceRef', 'schedulePattern', 'resourceName'],
    optional: [...API, 'description', 'incremental', 'keepLast', 'keepDaily', 'keepWeekly', 'scheduleVerify'], positional: 'instanceRef',
    specialise: {
      resourceName: { description: 'Name of the new schedule (its backups are named after it and their time)' },
      description: { description: 'Description of the new schedule' },
      incremental: { description: "Each run takes an incremental backup on the instance's latest COMPLETED backup (a full one when it has none)" },
    },
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
    path: ['schedule', 'list'], summary: "List an instance's backup schedules", required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, print, table } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = ((await c.get(`/instances/${encodeURIComponent(id)}/schedules`)).schedules ?? []) as Array<JsonObject>;
      print(io, o.json, { schedules: rows }, () => table(rows, COLS));
      return 0;
    },
  }),
  one('show', 'Show a backup schedule: pattern, retention, next run, what the last run did'),
  one('pause', 'Pause a backup schedule: no run falls due until it is resumed'),
  one('resume', 'Resume a paused backup schedule from its next slot (slots missed while paused do not run)'),
  defineCommand({
    path: ['schedule', 'delete'], summary: 'Delete a backup schedule (its backups stay)', required: ['instanceRef', 'scheduleId'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, label, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const s = await c.findSchedule(id, o.scheduleId);
      await c.request('DELETE', `/instances/${encodeURIComponent(id)}/schedules/${encodeURIComponent(s.id)}`);
      print(io, o.json, { id: s.id, name: s.name, deleted: true }, () => `schedule ${label(s)} deleted\n`);
      return 0;
    },
  }),
];
