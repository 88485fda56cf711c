// Options of the control plane: `couchtrove server` and the API client commands
// (`couchtrove instance|database|user|root|backup|flavor|configuration ...`).
// The server's own settings (flavors, projects, tokens, [couchdb]) live in its INI file: see
// src/config/server.ts and docs/control-plane.md.
import { parsers, UsageError, type OptionSpec } from '../catalogue.js';
import { LOG_LEVELS } from '../../util/log.js';
import { expandHome, normalizePublicUrl, publicUrlProblem } from '../server.js';

const G = 'Control plane';
const C = 'Control plane client';

const name = (raw: string, flag: string): string => {
  if (raw.length === 0 || raw.length > 255) throw new UsageError(`--${flag}: must be 1 to 255 characters`);
  return raw;
};

export const serverOptions = {
  serverPort: {
    flag: 'port', arg: 'PORT', group: G, env: 'COUCHTROVE_PORT', parse: parsers.integer(0, 65535),
    description: "Port the Trove API listens on (default 8779, Trove's port; 0 picks a free one)",
  },
  serverHost: {
    flag: 'host', arg: 'ADDRESS', group: G, env: 'COUCHTROVE_HOST', parse: parsers.string,
    description: 'Address the Trove API listens on (default 127.0.0.1)',
  },
  publicUrl: {
    flag: 'public-url', arg: 'URL', group: G, env: 'COUCHTROVE_PUBLIC_URL',
    parse: (raw: string, flag: string): string => {
      const problem = publicUrlProblem(raw);
      if (problem) throw new UsageError(`--${flag}: ${problem}`);
      return normalizePublicUrl(raw);
    },
    description: "Base URL of the links in API responses, as clients reach the API (http(s)://host[:port][/prefix]; default http://HOST:PORT of the listener). The request's Host header is never used",
  },
  stateDir: {
    flag: 'state-dir', arg: 'DIR', group: G, env: 'COUCHTROVE_STATE_DIR',
    parse: (raw: string, flag: string): string => parsers.absolutePath(expandHome(raw), flag),
    description: 'State directory: state.db (SQLite), instances/ (one directory per local instance), backups/ (default ~/.couchtrove; /var/lib/couchtrove as root)',
  },
  serverConfigFile: {
    flag: 'config-file', arg: 'FILE', group: G, env: 'COUCHTROVE_CONFIG_FILE',
    parse: (raw: string, flag: string): string => parsers.absolutePath(expandHome(raw), flag),
    description: 'The control plane configuration file (INI: [DEFAULT], [couchdb], [flavor:ID], [project:ID], [datastore_version:NAME]; docs/control-plane.md)',
  },
  logLevel: {
    flag: 'log-level', arg: 'LEVEL', group: G, env: 'COUCHTROVE_LOG_LEVEL', default: 'info', parse: parsers.oneOf(...LOG_LEVELS),
    description: 'Least level logged by the server and the agents it starts (fatal, error, warn, info, debug, trace, silent). JSON lines when stderr is not a terminal, text on a terminal; the request log is at info',
  },
  apiUrl: {
    flag: 'api-url', arg: 'URL', group: C, env: 'COUCHTROVE_API_URL', default: 'http://127.0.0.1:8779', parse: parsers.url,
    description: 'URL of the couchtrove API (without /v1.0)',
  },
  apiToken: {
    flag: 'token', arg: 'TOKEN', group: C, env: 'COUCHTROVE_TOKEN', parse: parsers.string,
    description: 'X-Auth-Token for the project (prefer the environment: flags show in process listings). Default: notused (local mode)',
  },
  apiProject: {
    flag: 'project', arg: 'ID', group: C, env: 'COUCHTROVE_PROJECT', default: 'local', parse: parsers.string,
    description: 'Project id (the {project_id} of /v1.0/{project_id}/...)',
  },
  wait: {
    flag: 'wait', group: C, parse: parsers.boolean,
    description: "Wait until the instance or backup reaches a final state: on a terminal one line with the state (and a backup's bytes, rate and ETA from the API), otherwise one line per state",
  },
  instanceRef: {
    flag: 'instance', arg: 'ID', group: C, parse: name,
    description: 'Instance id or name',
  },
  clusterRef: {
    flag: 'cluster', arg: 'ID', group: C, parse: name,
    description: 'Cluster id or name',
  },
  clusterNodes: {
    flag: 'nodes', arg: 'N', group: C, parse: parsers.integer(2, 9),
    description: 'Members of the new cluster (2 to 9; docs/cluster.md)',
  },
  resourceName: {
    flag: 'name', arg: 'NAME', group: C, parse: name,
    description: 'Name of the new resource',
  },
  flavorRef: {
    flag: 'flavor', arg: 'ID', group: C, parse: name,
    description: 'Flavor id or name',
  },
  volumeSize: {
    flag: 'size', arg: 'GB', group: C, parse: parsers.integer(1, 1 << 20),
    description: 'Volume size in GB',
  },
  datastoreVersion: {
    flag: 'datastore-version', arg: 'VERSION', group: C, parse: name,
    description: 'CouchDB datastore version (default: the default version)',
  },
  userSpecs: {
    flag: 'users', arg: 'LIST', group: C,
    parse: (raw: string, flag: string): Array<{ name: string; password: string; databases: string[] }> =>
      raw.split(',').map((item) => {
        const m = /^([^:]+):([^:]+)(?::(.+))?$/.exec(item.trim());
        if (!m) throw new UsageError(`--${flag}: expected NAME:PASSWORD[:DB+DB...], comma separated, got ${JSON.stringify(item)}`);
        return { name: m[1]!, password: m[2]!, databases: m[3] ? m[3].split('+') : [] };
      }),
    description: 'Users of a new instance: NAME:PASSWORD[:DB+DB...], comma separated',
  },
  userPassword: {
    flag: 'password', arg: 'PASSWORD', group: C, env: 'COUCHTROVE_USER_PASSWORD', parse: parsers.string,
    description: "The user's password (prefer COUCHTROVE_USER_PASSWORD: flags show in process listings)",
  },
  description: {
    flag: 'description', arg: 'TEXT', group: C, parse: (raw: string): string => raw,
    description: 'Description of the new resource',
  },
  replicaOf: {
    flag: 'replica-of', arg: 'ID', group: C, parse: name,
    description: 'Create the instance as a replica of this instance',
  },
  configurationRef: {
    flag: 'configuration', arg: 'ID', group: C, parse: name,
    description: 'Configuration group id or name',
  },
  configValues: {
    flag: 'values', arg: 'JSON', group: C,
    parse: (raw: string, flag: string): Record<string, unknown> => {
      let v: unknown;
      try {
        v = JSON.parse(raw);
      } catch {
        throw new UsageError(`--${flag}: not JSON: expected an object such as '{"couchdb/max_document_size": 8000000}'`);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError(`--${flag}: expected a JSON object of "section/key": value`);
      return v as Record<string, unknown>;
    },
    description: 'Configuration values as a JSON object of "section/key": value',
  },
  pageLimit: {
    flag: 'limit', arg: 'N', group: C, parse: parsers.integer(1, 1000),
    description: 'Page size of a list',
  },
  pageMarker: {
    flag: 'marker', arg: 'ID', group: C, parse: name,
    description: 'List after this id (paging; a listing cut by --limit prints the next marker on stderr)',
  },
  accessRole: {
    flag: 'role', arg: 'ROLE', group: C, default: 'member', parse: parsers.oneOf('admin', 'member'),
    description: "The user's role on the databases: member reads and writes documents; admin also writes design documents (views, Mango indexes) and the database's _security",
  },
  logName: {
    flag: 'log', arg: 'NAME', group: C, default: 'couchdb', parse: name,
    description: "The instance's log: couchdb (CouchDB's own log)",
  },
  tailLines: {
    flag: 'lines', arg: 'N', group: C, default: '50', parse: parsers.integer(0, 100_000),
    description: 'How many of the last lines to print (0: the whole current file)',
  },
  tailFollow: {
    flag: 'follow', group: C, parse: parsers.boolean,
    description: 'Keep printing the lines added to the log until interrupted (Ctrl-C)',
  },
  nameKind: {
    flag: 'kind', arg: 'KIND', group: C, parse: parsers.oneOf('instance', 'backup', 'configuration', 'schedule'),
    description: 'What to list the names of: instance, backup, configuration or schedule',
  },
  shell: {
    flag: 'shell', arg: 'SHELL', group: C, parse: parsers.oneOf('bash', 'zsh', 'fish'),
    description: 'The shell to print a completion script for: bash, zsh or fish',
  },
  datastoreFilter: {
    flag: 'datastore', arg: 'TYPE', group: C, parse: name,
    description: 'Only backups of this datastore',
  },
} satisfies Record<string, OptionSpec<unknown>>;
