// What CouchDB reads: local.ini (the last file of the instance's ini chain) and vm.args, both rebuilt by the
// agent from what it allows, never patched. A server admin can make CouchDB write raw lines into any file its
// uid can write (log/file, then a view's log(): couchdb-3.md), so whatever the agent finds in an old local.ini
// is only a source of values for an allow-list: the settings the agent manages, server admins with hashed
// passwords, the cookie-auth secret, and keys of the published catalogue with valid values. Program sections
// (native_query_servers, query_servers, os_daemons, daemons, ...) can never come through.
import { randomBytes } from 'node:crypto';
import { IniFile } from './ini.js';
import { instanceFiles } from './files.js';
import type { ParsedOverride } from './config-keys.js';
import type { InstanceSettings } from './protocol.js';
import { checkIniValue, couchdbParameter } from '../config/couchdb-parameters.js';

/**
 * The settings the agent owns, whatever a server admin changed over HTTP (/_node/_local/_config lets one
 * change them all at run time: couchdb-3.md): where the data is, where CouchDB listens, where it logs.
 * Values null are left unset.
 */
export function managedSettings(s: InstanceSettings, uuid: string): Array<{ section: string; key: string; value: string | null }> {
  const f = instanceFiles(s);
  return [
    { section: 'couchdb', key: 'database_dir', value: s.dataDir },
    { section: 'couchdb', key: 'view_index_dir', value: s.dataDir },
    { section: 'couchdb', key: 'uuid', value: uuid },
    // A cluster member's system databases are made once every node has joined (clustered, n copies).
    { section: 'couchdb', key: 'single_node', value: s.cluster ? 'false' : 'true' },
    { section: 'couchdb', key: 'uri_file', value: null },
    { section: 'chttpd', key: 'port', value: String(s.port) },
    { section: 'chttpd', key: 'bind_address', value: s.bindAddress },
    { section: 'httpd', key: 'bind_address', value: null },
    { section: 'httpd', key: 'port', value: null },
    { section: 'prometheus', key: 'additional_port', value: null },
    { section: 'prometheus', key: 'bind_address', value: null },
    { section: 'prometheus', key: 'port', value: null },
    { section: 'cluster', key: 'n', value: String(s.cluster?.n ?? 1) },
    // A single node's q stays what a configuration group sets (the catalogue's cluster/q).
    ...(s.cluster ? [{ section: 'cluster', key: 'q', value: String(s.cluster.q) }] : []),
    { section: 'smoosh', key: 'state_dir', value: f.smoosh },
    { section: 'log', key: 'writer', value: 'stderr' },
    { section: 'log', key: 'file', value: null },
  ];
}

/** CouchDB 3.5's hashed admin password forms (couch_passwords:get_unhashed_admins). */
export const HASHED_ADMIN = /^-(pbkdf2(:sha(224|256|384|512)?)?|hashed)-[0-9a-f]+,[0-9A-Za-z]+(,\d{1,10})?$/;
const ADMIN_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$/;
const SECRET = /^[A-Za-z0-9]{16,256}$/;

export interface LocalIniInput {
  settings: InstanceSettings;
  uuid: string;
  /** The agent's own admin: its password, written plain when no hash of it is known yet. */
  agentAdmin: { username: string; password: string };
  /** Configuration group values (the agent's record): they win over anything found. */
  overrides: ParsedOverride[];
  /** The local.ini found, if any: a source of allowed values only. */
  existing: IniFile | null;
  /** A cluster member's [chttpd_auth] secret, the cluster's (session cookies work through any node). */
  authSecret?: string;
}

export interface BuiltIni {
  text: string;
  /** Managed settings whose value found was different ('section/key'). */
  reset: string[];
  /** Entries found that are not allowed and were left out ('section/key'). */
  dropped: string[];
}

export function buildLocalIni(input: LocalIniInput): BuiltIni {
  const { settings: s, uuid, agentAdmin, overrides, existing, authSecret } = input;
  const found = existing?.sections() ?? new Map<string, Map<string, string>>();
  const ini = IniFile.parse(
    [
      `; Written by the couchtrove agent for instance ${s.instanceId}, rebuilt at every start from what it allows`,
      '; (src/agent/local-ini.ts): edits outside that are dropped. CouchDB reads this file but cannot write it.',
      '',
    ].join('\n'),
  );
  const reset: string[] = [];
  const managed = new Set<string>();
  for (const m of managedSettings(s, uuid)) {
    const name = `${m.section}/${m.key}`;
    managed.add(name);
    const was = found.get(m.section)?.get(m.key) ?? null;
    if (existing && was !== m.value && !(was === '' && m.value === null)) reset.push(name);
    if (m.value !== null) ini.set(m.section, m.key, m.value);
  }
  // Kept across restarts so that session cookies stay valid; CouchDB cannot persist the one it makes.
  const secret = found.get('chttpd_auth')?.get('secret');
  ini.set('chttpd_auth', 'secret', authSecret ?? (secret !== undefined && SECRET.test(secret) ? secret : randomBytes(16).toString('hex')));
  for (const [name, value] of found.get('admins') ?? []) {
    if (name !== agentAdmin.username && ADMIN_NAME.test(name) && HASHED_ADMIN.test(value)) ini.set('admins', name, value);
  }
  const mine = found.get('admins')?.get(agentAdmin.username);
  ini.set('admins', agentAdmin.username, mine !== undefined && HASHED_ADMIN.test(mine) ? mine : agentAdmin.password);
  for (const [section, entries] of found) {
    if (section === 'admins') continue;
    for (const [key, value] of entries) {
      const name = `${section}/${key}`;
      const p = managed.has(name) || name === 'chttpd_auth/secret' ? undefined : couchdbParameter(name);
      if (p && value !== '' && checkIniValue(p, value) === null) ini.set(section, key, value);
    }
  }
  for (const o of overrides) {
    if (o.value === null) ini.delete(o.section, o.key);
    else ini.set(o.section, o.key, o.value);
  }
  const kept = ini.sections();
  const dropped: string[] = [];
  for (const [section, entries] of found) {
    for (const [key, value] of entries) {
      if (value !== '' && !managed.has(`${section}/${key}`) && kept.get(section)?.get(key) === undefined) dropped.push(`${section}/${key}`);
    }
  }
  return { text: ini.toString(), reset, dropped };
}

export function renderVmArgs(s: InstanceSettings): string {
  const lines = [
    `# Written by the couchtrove agent for instance ${s.instanceId} (COUCHDB_ARGS_FILE). No cookie here:`,
    '# CouchDB\'s launcher puts these arguments on the command line; Erlang reads $HOME/.erlang.cookie.',
    `-name ${s.nodeName}`,
    '-kernel error_logger silent',
    '-sasl sasl_error_logger false',
    // Erlang distribution on loopback only; a containerised member's on the container's addresses, of which
    // only its cluster's network reaches another container (the port is never published).
    ...(s.cluster?.epmdless ? ['# Erlang distribution on the cluster\'s network; no epmd: every member listens on the one port.', '-start_epmd false', `-erl_epmd_port ${s.cluster.distPort}`]
      : ['# Erlang distribution on loopback only.', '-kernel inet_dist_use_interface {127,0,0,1}']),
    // A cluster member listens for its peers on one fixed port (epmd tells them which).
    ...(s.cluster ? [`-kernel inet_dist_listen_min ${s.cluster.distPort}`, `-kernel inet_dist_listen_max ${s.cluster.distPort}`] : []),
    '+K true',
    '+A 16',
    '+Bd -noinput',
  ];
  if (s.flavor) lines.push(`+S ${s.flavor.vcpus}:${s.flavor.vcpus}`);
  return `${lines.join('\n')}\n`;
}
