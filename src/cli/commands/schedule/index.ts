// `couchtrove schedule create|list|show|pause|resume|delete INSTANCE` (or `--cluster ID`): backup schedules of
// an instance (Trove's schedule-create, schedule-list, schedule-delete) or of a cluster, through couchtrove's
// /instances/{id}/schedules and /clusters/{id}/schedules endpoints.
// The API client is loaded inside run(): other commands do not pay for it.
import { defineCommand, type AnyCommand } from '../../command.js';
import type { JsonObject, TroveApiClient } from '../../../api/client.js';
import { API } from '../api.js';
import { instanceOrCluster } from '../cluster/index.js';

const COLS = ['id', 'name', 'pattern', 'incremental', 'keep_last', 'keep_daily', 'keep_weekly', 'verify', 'paused', 'next_run', 'last_result'];
/** Every schedule command names an instance (positional) or a cluster (--cluster). */
const OWNER = ['instanceRef', 'clusterRef'] as const;

/** The schedules endpoint of the instance or cluster the command names (exactly one of them). */
export async function schedulesAt(c: TroveApiClient, o: { instanceRef?: string | undefined; clusterRef?: string | undefined }, missing = 'give the instance'): Promise<string> {
  const { kind, id } = await instanceOrCluster(c, o, missing);
  return `/${kind}s/${encodeURIComponent(id)}/schedules`;
}

/** show, pause and resume: one schedule of an instance or cluster, by name or id. */
function one(verb: 'show' | 'pause' | 'resume', summary: string): AnyCommand {
  return defineCommand({
    path: ['schedule', verb], summary, required: ['scheduleId'], optional: [...API, ...OWNER], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, details, label, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const at = await schedulesAt(c, o);
      const s = await c.findSchedule(at, o.scheduleId);
      const path = `${at}/${encodeURIComponent(s.id)}`;
      const r = (verb === 'show' ? await c.get(path) : await c.request('PATCH', path, { schedule: { paused: verb === 'pause' } })).schedule as JsonObject;
      print(io, o.json, { schedule: r }, () => (verb === 'show' ? details(r) : `schedule ${label(s)} ${verb === 'pause' ? 'is paused' : `is resumed: next run ${String(r.next_run)}`}\n`));
      return 0;
    },
  });
}

export const scheduleCommands: AnyCommand[] = [
  defineCommand({
    path: ['schedule', 'create'],
    summary: 'Back up an instance (or a whole cluster: --cluster) on a cron pattern (UTC), full or --incremental, with optional retention (--keep-last/--keep-daily/--keep-weekly) applied after each run',
    required: ['schedulePattern', 'resourceName'],
    optional: [...API, ...OWNER, 'description', 'incremental', 'keepLast', 'keepDaily', 'keepWeekly', 'scheduleVerify'], positional: 'instanceRef',
    specialise: {
      resourceName: { description: 'Name of the new schedule (its backups are named after it and their time)' },
      description: { description: 'Description of the new schedule' },
      incremental: { description: "Each run takes an incremental backup on the instance's (or cluster's) latest COMPLETED backup (a full one when it has none)" },
    },
    run: async (o, io) => {
      const { TroveApiClient, details, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const at = await schedulesAt(c, o);
      const schedule: Record<string, string | number> = { name: o.resourceName, pattern: o.schedulePattern, incremental: o.incremental ? 1 : 0 };
      if (o.description !== undefined) schedule.description = o.description;
      if (o.keepLast !== undefined) schedule.keep_last = o.keepLast;
      if (o.keepDaily !== undefined) schedule.keep_daily = o.keepDaily;
      if (o.keepWeekly !== undefined) schedule.keep_weekly = o.keepWeekly;
      if (o.scheduleVerify) schedule.verify = 1;
      const s = (await c.request('POST', at, { schedule })).schedule as JsonObject;
      print(io, o.json, { schedule: s }, () => details(s));
      return 0;
    },
  }),
  defineCommand({
    path: ['schedule', 'list'], summary: "List an instance's (or a cluster's) backup schedules", required: [], optional: [...API, ...OWNER], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, print, table } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const rows = ((await c.get(await schedulesAt(c, o))).schedules ?? []) as Array<JsonObject>;
      print(io, o.json, { schedules: rows }, () => table(rows, COLS));
      return 0;
    },
  }),
  one('show', 'Show a backup schedule: pattern, retention, next run, what the last run did'),
  one('pause', 'Pause a backup schedule: no run falls due until it is resumed'),
  one('resume', 'Resume a paused backup schedule from its next slot (slots missed while paused do not run)'),
  defineCommand({
    path: ['schedule', 'delete'], summary: 'Delete a backup schedule (its backups stay)', required: ['scheduleId'], optional: [...API, ...OWNER], positional: 'instanceRef',
    run: async (o, io) => {
      const { TroveApiClient, label, print } = await import('../../../api/client.js');
      const c = new TroveApiClient(o);
      const at = await schedulesAt(c, o);
      const s = await c.findSchedule(at, o.scheduleId);
      await c.request('DELETE', `${at}/${encodeURIComponent(s.id)}`);
      print(io, o.json, { id: s.id, name: s.name, deleted: true }, () => `schedule ${label(s)} deleted\n`);
      return 0;
    },
  }),
];
