// Options of continuous archiving and point-in-time restore: `couchtrove instance archive NAME --on|--off`,
// `instance create --backup B --restore-time T`, `agent archive` and `agent restore --to-time T`.
import { parsers, UsageError, type OptionSpec } from '../option.js';
import { parseRestoreTime, RESTORE_TIME_FORMS } from '../../util/restore-time.js';

const A = 'Continuous archiving';

/** A restore time in one of the forms people type (src/util/restore-time.ts); kept as typed, the API reads it. */
const time = (raw: string, flag: string): string => {
  if (!parseRestoreTime(raw)) throw new UsageError(`--${flag}: expected one of ${RESTORE_TIME_FORMS}; got ${JSON.stringify(raw)}`);
  return raw.trim();
};

export const archiveOptions = {
  archiveOn: {
    flag: 'on', group: A, parse: parsers.boolean,
    description: 'Switch continuous archiving on: a consistent cut every --interval seconds into the instance\'s repository',
  },
  archiveOff: {
    flag: 'off', group: A, parse: parsers.boolean,
    description: 'Switch continuous archiving off (the restore points already stored stay, under their retention)',
  },
  archiveInterval: {
    flag: 'interval', arg: 'SECONDS', group: A, parse: parsers.integer(1, 3600),
    description: 'Seconds between archive cuts (default 5): the recovery point objective',
  },
  archiveKeepDays: {
    flag: 'keep-days', arg: 'DAYS', group: A, parse: parsers.integer(1, 3650),
    description: 'Days of restore points an archive keeps (default 7); what a kept point needs is never removed',
  },
  archiveStream: {
    flag: 'stream', arg: 'NAME', group: A,
    parse: (raw: string, flag: string): string => (/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(raw) ? raw : ((): never => { throw new UsageError(`--${flag}: expected a name of letters, digits, '.', '_' or '-', got ${JSON.stringify(raw)}`); })()),
    description: 'Archive stream: archive/NAME/ in the repository (the control plane uses the instance id)',
  },
  archiveRebaseShare: {
    flag: 'rebase-share', arg: 'PERCENT', group: A, parse: parsers.integer(1, 10000),
    description: 'A new full base once the cuts since the last base have stored more than this percentage of it (default 50)',
  },
  restoreTime: {
    flag: 'restore-time', arg: 'TIME', group: A, parse: time,
    description: 'Point-in-time restore: the data as of the newest archive cut at or before TIME ("latest" or "now": the newest restore point; "2026-12-07 04:01:49" is UTC; or ISO 8601 with a zone), from the archive of --from-instance (or of the --backup\'s instance)',
  },
  fromInstance: {
    flag: 'from-instance', arg: 'NAME|ID', group: A, parse: parsers.string,
    description: 'instance create: restore the archive (or newest backup) of this instance, live or deleted (`instance list` with its deleted filter lists those), as of --restore-time (default latest)',
  },
  listDeleted: {
    flag: 'deleted', group: A, parse: parsers.boolean,
    description: 'instance list: the deleted instances whose archive or backups are still kept, with their restorable window and when it expires',
  },
  toTime: {
    flag: 'to-time', arg: 'TIME', group: A, parse: time,
    description: 'The newest archive cut at or before TIME ("latest" or "now": the newest restore point; "2026-12-07 04:01:49" is UTC; or ISO 8601 with a zone)',
  },
  fromTime: {
    flag: 'from-time', arg: 'TIME', group: A, parse: time,
    description: 'instance cuts: only cuts whose restore point is at or after TIME (the forms of --to-time)',
  },
  newestFirst: {
    flag: 'newest-first', group: A, parse: parsers.boolean,
    description: 'instance cuts: newest first (with --to-time --limit 1: the restore point a restore to that time uses)',
  },
  restoreAs: {
    flag: 'as', arg: 'NAME', group: A, parse: parsers.string,
    description: 'database restore: the name the restored database gets in the running instance (default: its own name, which needs --replace)',
  },
  replaceDatabase: {
    flag: 'replace', group: A, parse: parsers.boolean,
    description: 'database restore: replace the live database of that name (it is deleted, then copied back from the backup)',
  },
} satisfies Record<string, OptionSpec<unknown>>;
