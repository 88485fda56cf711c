// Options of the agent's own commands: `couchtrove agent serve|status|database|user|root`.
// The CouchDB URL is the catalogue's couchdbUrl (--couchdb-url); admin credentials come from
// COUCHDB_USER and COUCHDB_PASSWORD, and passwords from standard input, never from argv.
import { parsers, UsageError, type OptionSpec } from '../option.js';

const list = (raw: string, flag: string): string[] => {
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new UsageError(`--${flag}: expected a comma-separated list`);
  return items;
};

export const agentOptions = {
  agentConfig: {
    flag: 'config', arg: 'FILE', group: 'Agent', parse: parsers.absolutePath,
    description: 'JSON file {host, port, tokenFile, instanceDir[, storageCredentialsFile]} for `agent serve`: where the RPC listens, the 0600 file holding its bearer token, the agent\'s directory, and (in a container) the 0400 JSON file of the object store\'s variables (ST_AUTH, AWS_ACCESS_KEY_ID, ...) it opens repositories with',
  },
  privilegedFd: {
    flag: 'privileged-fd', arg: 'FD', group: 'Agent', parse: parsers.integer(3, 1023),
    description: 'Set by `agent entry` (in a container): the socket to the parent that gives files to the instance user; the agent then runs without CAP_CHOWN and CAP_FOWNER',
  },
  instanceUser: {
    flag: 'instance-user', arg: 'UID:GID', group: 'Agent',
    parse: (raw: string, flag: string): { uid: number; gid: number } => {
      const m = /^(\d+):(\d+)$/.exec(raw);
      if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new UsageError(`--${flag}: expected UID:GID (numbers above 0), got ${JSON.stringify(raw)}`);
      return { uid: Number(m[1]), gid: Number(m[2]) };
    },
    description: '`agent entry`: the only user files are given to (the image\'s CouchDB user)',
  },
  volume: {
    flag: 'volume', arg: 'DIR', group: 'Agent', parse: parsers.absolutePath,
    description: '`agent entry`: the instance\'s volume; files are given only inside it',
  },
  database: {
    flag: 'database', arg: 'NAME', group: 'Agent', parse: parsers.string,
    description: "Database name (CouchDB's rules: a lowercase letter, then a-z 0-9 _ $ ( ) + - /)",
  },
  databases: {
    flag: 'databases', arg: 'LIST', group: 'Agent', parse: list,
    description: 'Comma-separated database names the user gets access to (members of their _security)',
  },
  user: {
    flag: 'user', arg: 'NAME', group: 'Agent', parse: parsers.string,
    description: 'CouchDB user name (a document in _users)',
  },
  roles: {
    flag: 'roles', arg: 'LIST', group: 'Agent', parse: list,
    description: 'Comma-separated roles of a new user',
  },
  passwordStdin: {
    flag: 'password-stdin', group: 'Agent', parse: parsers.boolean,
    description: 'Read the password from the first line of standard input (without it, one is generated and printed)',
  },
} satisfies Record<string, OptionSpec<unknown>>;
