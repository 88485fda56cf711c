// Configuration overrides ('section/key' = value): which keys CouchDB 3.x applies live through
// /_node/_local/_config, which need a restart, and which the agent refuses because they would break
// the instance it manages (its data directory, address, admins, node identity).
import { AgentError, invalid } from './errors.js';

export type KeyKind = 'live' | 'restart';

export interface ParsedOverride {
  section: string;
  key: string;
  value: string;
  kind: KeyKind;
}

const REFUSED: Record<string, string> = {
  'couchdb/database_dir': 'the data directory is the volume the agent manages',
  'couchdb/view_index_dir': 'the index directory is the volume the agent manages',
  'couchdb/uuid': "the server's uuid identifies the instance",
  'couchdb/single_node': 'the instance is a single node; the agent relies on its system databases',
  'chttpd/port': 'the port is an instance setting (change it through the control plane)',
  'chttpd/bind_address': 'the bind address is an instance setting (change it through the control plane)',
  'httpd/port': 'the port is an instance setting',
  'httpd/bind_address': 'the bind address is an instance setting',
  'cluster/n': 'a single node keeps one copy of each shard (n = 1)',
  'smoosh/state_dir': 'the agent places it in the instance directory',
  'couch_httpd_auth/authentication_db': 'users live in _users, which the agent manages',
  'chttpd_auth/authentication_db': 'users live in _users, which the agent manages',
};

const REFUSED_SECTIONS: Record<string, string> = {
  admins: 'server admins are managed by the agent (root enable/disable)',
  query_servers: 'it would let CouchDB run any program',
  native_query_servers: 'it would let CouchDB run any code',
  daemons: 'it would start Erlang processes',
  os_daemons: 'it would let CouchDB run any program',
};

/** Sections CouchDB 3.x reads at use time: a change through /_node/_local/_config applies at once. */
const LIVE_SECTIONS = new Set([
  'log',
  'cors',
  'csp',
  'couch_httpd_auth',
  'chttpd_auth',
  'compactions',
  'database_compaction',
  'view_compaction',
  'smoosh',
  'replicator',
  'query_server_config',
  'attachments',
  'uuids',
  'ioq',
  'ken',
  'couch_peruser',
  'fabric',
  'purge',
  'indexers',
  'mango',
]);

const LIVE_KEYS = new Set([
  'couchdb/max_dbs_open',
  'couchdb/max_document_size',
  'couchdb/max_attachment_size',
  'couchdb/os_process_timeout',
  'couchdb/file_compression',
  'couchdb/default_security',
  'couchdb/users_db_security_editable',
  'couchdb/attachment_stream_buffer_size',
  'couchdb/update_lru_on_read',
  'chttpd/max_http_request_size',
  'chttpd/require_valid_user',
  'chttpd/require_valid_user_except_for_up',
  'chttpd/enable_cors',
  'chttpd/admin_only_all_dbs',
  'httpd/enable_cors',
  'httpd/WWW-Authenticate',
  'cluster/q',
]);

const integer = (min: number, max: number) => (v: string) => (/^\d+$/.test(v) && Number(v) >= min && Number(v) <= max ? null : `a whole number between ${min} and ${max}`);
const bool = (v: string) => (v === 'true' || v === 'false' ? null : 'true or false');
const oneOf = (...values: string[]) => (v: string) => (values.includes(v) ? null : `one of ${values.join(', ')}`);

const TYPED: Record<string, (v: string) => string | null> = {
  'couchdb/max_dbs_open': integer(1, 1_000_000),
  'couchdb/max_document_size': integer(1, 4_294_967_296),
  'couchdb/max_attachment_size': integer(1, Number.MAX_SAFE_INTEGER),
  'couchdb/os_process_timeout': integer(1, 3_600_000),
  'couchdb/default_security': oneOf('admin_only', 'everyone'),
  'couchdb/file_compression': (v) => (/^(none|snappy|deflate_[1-9])$/.test(v) ? null : 'none, snappy or deflate_1 ... deflate_9'),
  'couchdb/users_db_security_editable': bool,
  'chttpd/max_http_request_size': integer(1, Number.MAX_SAFE_INTEGER),
  'chttpd/require_valid_user': bool,
  'chttpd/require_valid_user_except_for_up': bool,
  'chttpd/enable_cors': bool,
  'chttpd/admin_only_all_dbs': bool,
  'httpd/enable_cors': bool,
  'cluster/q': integer(1, 256),
  'log/level': oneOf('debug', 'info', 'notice', 'warning', 'warn', 'error', 'critical', 'alert', 'emergency', 'none'),
  'replicator/max_jobs': integer(1, 1_000_000),
  'replicator/max_churn': integer(1, 1_000_000),
  'replicator/interval': integer(1, 86_400_000),
  'replicator/worker_processes': integer(1, 1000),
  'replicator/http_connections': integer(1, 10_000),
  'replicator/connection_timeout': integer(1, 3_600_000),
  'replicator/retries_per_request': integer(0, 1000),
  'query_server_config/os_process_limit': integer(1, 10_000),
  'couch_httpd_auth/timeout': integer(1, 31_536_000),
  'chttpd_auth/timeout': integer(1, 31_536_000),
};

const SECTION_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const KEY_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Parses and checks one override; throws INVALID_ARGUMENT or REFUSED naming the key. */
export function parseOverride(name: string, value: unknown): ParsedOverride {
  const slash = name.indexOf('/');
  const section = slash > 0 ? name.slice(0, slash) : '';
  const key = slash > 0 ? name.slice(slash + 1) : '';
  if (!SECTION_RE.test(section) || !KEY_RE.test(key)) {
    throw invalid(`invalid configuration key ${JSON.stringify(name)}: expected section/key (letters, digits, _ . -)`);
  }
  if (typeof value !== 'string') throw invalid(`value of ${name} must be a string`);
  if (/[\0\r\n]/.test(value)) throw invalid(`value of ${name} must be one line`);
  if (/[ \t];/.test(value)) throw invalid(`value of ${name} must not contain " ;" (CouchDB reads the rest of the line as a comment)`);
  if (value.length > 4096) throw invalid(`value of ${name} is longer than 4096 characters`);
  if (value.trim() !== value || value === '') throw invalid(`value of ${name} must be non-empty without leading or trailing spaces`);
  const why = REFUSED_SECTIONS[section] ?? REFUSED[`${section}/${key}`] ?? (section.startsWith('smoosh') && key === 'state_dir' ? REFUSED['smoosh/state_dir'] : undefined);
  if (why) throw new AgentError('REFUSED', `configuration key ${name} cannot be overridden: ${why}`);
  const check = TYPED[`${section}/${key}`];
  const problem = check?.(value);
  if (problem) throw invalid(`invalid value ${JSON.stringify(value)} for ${name}: expected ${problem}`);
  const live = LIVE_KEYS.has(`${section}/${key}`) || LIVE_SECTIONS.has(section) || section.startsWith('smoosh.');
  return { section, key, value, kind: live ? 'live' : 'restart' };
}

/** Checks every override before any is applied; returns them in a stable order. */
export function parseOverrides(overrides: unknown, allowEmpty = false): ParsedOverride[] {
  if (!overrides || typeof overrides !== 'object' || Array.isArray(overrides)) throw invalid('overrides must be an object of "section/key": "value"');
  const entries = Object.entries(overrides as Record<string, unknown>);
  if (entries.length === 0 && !allowEmpty) throw invalid('no configuration overrides given');
  return entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => parseOverride(k, v));
}
