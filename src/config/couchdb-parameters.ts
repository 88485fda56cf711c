// The published catalogue of CouchDB settings a configuration group may hold: Trove's validation rules
// (validation-rules.json) for the couchdb datastore. It is an ALLOW-list, used by the API (to check and
// type values at create and edit, and to serve GET .../parameters) and by the agent (which refuses any
// other key: defence in depth). Nothing here names a path, a port, an address, a program or a
// credential: those are the instance's, set by the agent, and a tenant changing them could reach the
// host or another tenant (issue 14). Defaults and live/restart behaviour are CouchDB 3.5.0's
// (rel/overlay/etc/default.ini and where its code reads each key). Reference: docs/configuration-parameters.md.

export type ParameterType = 'integer' | 'string' | 'boolean';
export type ParameterValue = number | string | boolean;

export interface CouchdbParameter {
  /** "section/key", as in CouchDB's ini files. */
  name: string;
  type: ParameterType;
  /** Integers: inclusive bounds. */
  min?: number;
  max?: number;
  /** Strings: the allowed values, or a pattern (with its description) for a list such as MIME types. */
  values?: readonly string[];
  pattern?: { re: RegExp; text: string };
  /** false: CouchDB reads the key when it uses it, so a change through /_node/_local/_config applies at once. */
  restartRequired: boolean;
  /** CouchDB 3.5's default, as the ini file spells it. */
  default: string;
  description: string;
}

const int = (name: string, min: number, max: number, dflt: string, description: string, restartRequired = false): CouchdbParameter =>
  ({ name, type: 'integer', min, max, restartRequired, default: dflt, description });
const bool = (name: string, dflt: string, description: string, restartRequired = false): CouchdbParameter =>
  ({ name, type: 'boolean', restartRequired, default: dflt, description });
const oneOf = (name: string, values: readonly string[], dflt: string, description: string, restartRequired = false): CouchdbParameter =>
  ({ name, type: 'string', values, restartRequired, default: dflt, description });

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const MIME_LIST = /^(?:[a-z*][a-z0-9.+*-]{0,63}\/[a-z0-9.+*-]{1,63})(?:, ?[a-z*][a-z0-9.+*-]{0,63}\/[a-z0-9.+*-]{1,63}){0,63}$/;

/**
 * Every settable key. Left out on purpose, besides what names a path, port, address, program or
 * credential: chttpd/require_valid_user (it would hide /_up from the agent's health checks: use
 * require_valid_user_except_for_up), cors/* (origins), Erlang-term options (server_options,
 * socket_options), and keys that change what the agent relies on (single_node, cluster/n, uuid).
 */
export const COUCHDB_PARAMETERS: readonly CouchdbParameter[] = [
  // [couchdb]
  int('couchdb/max_dbs_open', 100, 1_000_000, '500', 'Database shard files kept open at once (the flavor sets max(100, RAM MiB / 2)).'),
  int('couchdb/max_document_size', 1, 4 * GiB, '8000000', 'Largest document body accepted, bytes (larger: 413).'),
  int('couchdb/max_attachment_size', 1, TiB, '1073741824', 'Largest attachment accepted, bytes.'),
  int('couchdb/attachment_stream_buffer_size', KiB, MiB, '4096', 'Buffer of attachment writes, bytes.'),
  int('couchdb/os_process_timeout', 100, 600_000, '5000', 'Time a query server (JavaScript) may take per request, ms.'),
  oneOf('couchdb/file_compression', ['none', 'snappy', ...Array.from({ length: 9 }, (_, i) => `deflate_${i + 1}`)], 'snappy',
    'Compression of database and index writes; applies to files opened or compacted after the change.'),
  oneOf('couchdb/default_security', ['admin_only', 'everyone'], 'admin_only', 'Security of a new database that has no _security object yet.'),
  bool('couchdb/update_lru_on_read', 'false', 'Reads also refresh the open-databases cache (not only writes).'),
  int('couchdb/max_document_id_length', 1, 65_536, 'infinity', 'Longest document id accepted, characters.'),
  int('couchdb/changes_doc_ids_optimization_threshold', 1, 1_000_000, '1000', 'Up to this many doc_ids, a filtered _changes reads the documents directly.'),
  int('couchdb/max_partition_size', 0, TiB, '10737418240', 'Largest partition of a partitioned database, bytes (0: no limit).'),
  // [chttpd]
  int('chttpd/max_http_request_size', KiB, 4 * GiB, '4294967296', 'Largest HTTP request body, bytes.'),
  bool('chttpd/require_valid_user_except_for_up', 'false', 'Every request but GET /_up needs a valid user.'),
  bool('chttpd/admin_only_all_dbs', 'true', '/_all_dbs and /_dbs_info are for server admins only.'),
  int('chttpd/max_db_number_for_dbs_info_req', 1, 10_000, '100', 'Most databases one POST /_dbs_info may ask about.'),
  int('chttpd/max_uri_length', KiB, MiB, '(no limit)', 'Longest request URI, bytes.'),
  bool('chttpd/server_header_versions', 'true', 'The Server header names the CouchDB and Erlang/OTP versions.'),
  // [chttpd_auth]
  int('chttpd_auth/timeout', 60, 31_536_000, '600', 'Seconds a session cookie stays valid without use.'),
  bool('chttpd_auth/allow_persistent_cookies', 'true', 'Session cookies outlive the browser session.'),
  int('chttpd_auth/iterations', 1000, 10_000_000, '600000', 'PBKDF2 iterations of newly hashed passwords.'),
  oneOf('chttpd_auth/same_site', ['strict', 'lax', 'none'], '(not set)', 'SameSite attribute of the session cookie.'),
  // [chttpd_auth_cache]: sized when CouchDB starts.
  int('chttpd_auth_cache/max_lifetime', 1000, 86_400_000, '600000', 'How long a cached user document is trusted, ms.', true),
  int('chttpd_auth_cache/max_objects', 0, 10_000_000, '0', 'Most cached user documents (0: no count limit).', true),
  int('chttpd_auth_cache/max_size', MiB, 16 * GiB, '104857600', 'Memory of the user cache, bytes.', true),
  // [cluster]
  int('cluster/q', 1, 256, '2', 'Shards of a new database.'),
  // [couch_peruser]
  bool('couch_peruser/enable', 'false', 'A private database for every user in _users.'),
  bool('couch_peruser/delete_dbs', 'false', "Deleting a user deletes that user's private database."),
  // [log]: what is logged, never where.
  oneOf('log/level', ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency', 'none'], 'info', 'Least severe messages logged.'),
  int('log/max_message_size', KiB, MiB, '16000', 'Longest log message before it is cut, bytes.'),
  // [query_server_config]
  int('query_server_config/os_process_limit', 1, 100_000, '100', 'Most query server processes (the flavor sets max(10, 25 x vCPUs)).'),
  int('query_server_config/os_process_soft_limit', 1, 100_000, '100', 'Query server processes kept when idle.'),
  int('query_server_config/os_process_idle_limit', 1, 86_400, '300', 'Seconds an idle query server process lives.'),
  oneOf('query_server_config/reduce_limit', ['true', 'false', 'log'], 'true', 'Reduce functions whose output does not shrink: refused, allowed, or logged.'),
  int('query_server_config/commit_freq', 1, 3600, '5', 'Seconds between commits of a view index being built.'),
  // [replicator]: jobs (re)started after a change use it.
  int('replicator/max_jobs', 1, 100_000, '500', 'Replication jobs running at once.'),
  int('replicator/interval', 1000, 86_400_000, '60000', 'Scheduling interval of replication jobs, ms.'),
  int('replicator/max_churn', 1, 100_000, '20', 'Jobs started or stopped per interval.'),
  int('replicator/worker_processes', 1, 128, '4', 'Workers of a replication job.'),
  int('replicator/worker_batch_size', 1, 100_000, '500', 'Documents a worker handles per batch.'),
  int('replicator/http_connections', 1, 1000, '20', 'HTTP connections of a replication job.'),
  int('replicator/connection_timeout', 1000, 3_600_000, '30000', 'HTTP request timeout of replication, ms.'),
  int('replicator/retries_per_request', 0, 100, '5', 'Retries of a failed replication request.'),
  int('replicator/checkpoint_interval', 1000, 3_600_000, '30000', 'Interval between replication checkpoints, ms.'),
  // [uuids]
  oneOf('uuids/algorithm', ['random', 'sequential', 'utc_random'], 'sequential', 'How CouchDB makes document ids.'),
  int('uuids/max_count', 1, 100_000, '1000', 'Most UUIDs one GET /_uuids returns.'),
  // [attachments]
  int('attachments/compression_level', 0, 9, '8', 'Compression level of compressible attachments (0: none).'),
  {
    name: 'attachments/compressible_types', type: 'string', restartRequired: false,
    pattern: { re: MIME_LIST, text: 'a comma separated list of MIME types such as text/*, application/json' },
    default: 'text/*, application/javascript, application/json, application/xml', description: 'MIME types of attachments that are compressed.',
  },
  // [purge]
  int('purge/max_document_id_number', 1, 100_000, '100', 'Most documents in one purge request.'),
  int('purge/max_revisions_number', 1, 1_000_000, '1000', 'Most revisions in one purge request.'),
  // [mango]
  int('mango/default_limit', 1, 1_000_000, '25', 'Documents a _find returns when it gives no limit.'),
  int('mango/index_scan_warning_threshold', 0, 1_000_000, '10', 'Documents scanned per result before _find warns (0: never).'),
  // [ddoc_cache]
  int('ddoc_cache/max_size', 0, 16 * GiB, '104857600', 'Memory of the design document cache, bytes.'),
];

const BY_NAME = new Map(COUCHDB_PARAMETERS.map((p) => [p.name, p]));

export function couchdbParameter(name: string): CouchdbParameter | undefined {
  return BY_NAME.get(name);
}

/** Why a key is not settable: the catalogue decides; this only explains the common ones. */
export function notSettableReason(name: string): string {
  const section = name.split('/')[0] ?? '';
  const key = name.slice(section.length + 1);
  if (['query_servers', 'native_query_servers', 'os_daemons', 'daemons'].includes(section)) return 'it would make CouchDB run a program';
  if (section === 'admins') return 'server admins are managed by the agent (root enable/disable)';
  if (['ssl', 'prometheus', 'httpd'].includes(section) || /(^|_)(port|bind_address|addr|host)$/.test(key)) return "the instance's ports and addresses are set by the control plane";
  if (/(^|_)(dir|file|path|writer)$/.test(key) || name === 'couchdb/uri_file') return "it names a file or directory of the instance's host";
  if (/(password|secret|key|cert|cookie)/.test(key)) return 'it would hold a credential';
  return 'it is not in the catalogue of settable CouchDB parameters';
}

/**
 * Checks a value given through the API (JSON) and returns it typed: integers as numbers, booleans as
 * booleans. A whole number given as a string ("8000000") and "true"/"false" are accepted and typed.
 * Returns the problem as text when the value is not acceptable.
 */
export function typeParameterValue(p: CouchdbParameter, v: unknown): { value: ParameterValue } | { problem: string } {
  if (p.type === 'integer') {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d{1,16}$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n)) return { problem: `must be a whole number between ${p.min} and ${p.max}, got ${show(v)}` };
    if (n < p.min! || n > p.max!) return { problem: `must be between ${p.min} and ${p.max}, got ${n}` };
    return { value: n };
  }
  if (p.type === 'boolean') {
    if (typeof v === 'boolean') return { value: v };
    if (v === 'true' || v === 'false') return { value: v === 'true' };
    return { problem: `must be true or false, got ${show(v)}` };
  }
  if (typeof v !== 'string') return { problem: `must be a string, got ${show(v)}` };
  if (p.values && !p.values.includes(v)) return { problem: `must be one of ${p.values.join(', ')}, got ${show(v)}` };
  if (p.pattern && !p.pattern.re.test(v)) return { problem: `must be ${p.pattern.text}, got ${show(v)}` };
  return { value: v };
}

/** The ini text of a typed value (what the agent writes and sends to CouchDB). */
export function iniValue(v: ParameterValue): string {
  return String(v);
}

/** Checks a value as the agent receives it (ini text); returns the problem, or null. */
export function checkIniValue(p: CouchdbParameter, raw: string): string | null {
  if (p.type === 'integer' && !/^-?\d{1,16}$/.test(raw)) return `must be a whole number between ${p.min} and ${p.max}, got ${show(raw)}`;
  if (p.type === 'boolean' && raw !== 'true' && raw !== 'false') return `must be true or false, got ${show(raw)}`;
  const r = typeParameterValue(p, raw);
  return 'problem' in r ? r.problem : null;
}

/** One entry as Trove's API shows it (GET .../parameters): min and max only for integers. */
export function troveParameterView(p: CouchdbParameter, datastoreVersionId: string): Record<string, unknown> {
  const v: Record<string, unknown> = { name: p.name, type: p.type, restart_required: p.restartRequired, datastore_version_id: datastoreVersionId };
  if (p.type === 'integer') {
    v.min = p.min;
    v.max = p.max;
  }
  return v;
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'nothing' : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
