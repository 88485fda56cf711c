// Options of incremental backups and backup schedules through the API: `couchtrove backup create
// --incremental|--parent` and `couchtrove schedule create|list|delete` (retention reuses --keep-last,
// --keep-daily and --keep-weekly).
import { parsers, UsageError, type OptionSpec } from '../option.js';

const C = 'Control plane client';

export const scheduleOptions = {
  incremental: {
    flag: 'incremental', group: C, parse: parsers.boolean,
    description: "Incremental: on top of the instance's latest COMPLETED backup (a full backup when it has none)",
  },
  schedulePattern: {
    flag: 'pattern', arg: 'CRON', group: C,
    parse: (raw: string, flag: string): string => {
      if (raw.trim().split(/\s+/).length !== 5) throw new UsageError(`--${flag}: expected 5 cron fields "minute hour day-of-month month day-of-week" (UTC), e.g. "0 3 * * *"; got ${JSON.stringify(raw)}`);
      return raw.trim();
    },
    description: 'When a schedule runs: a 5-field cron pattern in UTC, e.g. "0 * * * *" (hourly) or "0 3 * * 0" (Sundays 03:00)',
  },
  scheduleVerify: {
    flag: 'verify', group: C, parse: parsers.boolean,
    description: "After each run, verify its backup and the schedule's least recently verified older backup (reads them back whole in the control plane; backup show gives verify_result)",
  },
  scheduleId: {
    flag: 'schedule', arg: 'ID', group: C, parse: parsers.string,
    description: 'Schedule id or name',
  },
} satisfies Record<string, OptionSpec<unknown>>;
