// Options of `couchtrove agent replica source|follow|sync|status|detach` (docs/replication.md). The local
// CouchDB is --couchdb-url with admin credentials from COUCHDB_USER/COUCHDB_PASSWORD; the primary's
// replication credentials come from COUCHTROVE_PRIMARY_USER/COUCHTROVE_PRIMARY_PASSWORD. Never argv.
import { parsers, UsageError, type OptionSpec } from '../option.js';

export const replicationOptions = {
  primaryUrl: {
    flag: 'primary-url', arg: 'URL', group: 'Replication', parse: parsers.url,
    description: "The primary CouchDB's URL as this CouchDB reaches it (no credentials: they come from COUCHTROVE_PRIMARY_USER and COUCHTROVE_PRIMARY_PASSWORD)",
  },
  replicationState: {
    flag: 'replication-state', arg: 'FILE', group: 'Replication', env: 'COUCHTROVE_REPLICATION_STATE', parse: parsers.absolutePath,
    description: "File (kept mode 0600) holding this CouchDB's replication user and the primary it follows; the agent keeps its own in the instance directory",
  },
  primaryName: {
    flag: 'primary-name', arg: 'NAME', group: 'Replication', parse: parsers.string,
    description: 'Name of the primary in the error clients get when they write to the replica (default: its host:port)',
  },
  replicaDatabases: {
    flag: 'replica-databases', arg: 'LIST', group: 'Replication',
    parse: (raw: string, flag: string): string[] => {
      const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (items.length === 0) throw new UsageError(`--${flag}: expected a comma-separated list`);
      return items;
    },
    description: 'Follow only these databases of the primary (default: all; _users always follows)',
  },
} satisfies Record<string, OptionSpec<unknown>>;
