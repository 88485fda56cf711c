// What CouchDB reads and the settings it runs with: the instance's files laid out and local.ini rebuilt at
// every start (files.ts, local-ini.ts), configuration overrides applied live or for the next restart,
// server admins (root) kept as CouchDB's own hash, and the managed settings set back when a server admin
// changed them in memory. CouchDB of an isolated instance can read local.ini but never write it.
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IniFile } from './ini.js';
import { ensureDir, instanceFiles, isFileAsExpected, ownership, readUntrusted, replaceFile } from './files.js';
import { buildLocalIni, HASHED_ADMIN, managedSettings, renderVmArgs } from './local-ini.js';
import { parseOverrides, type ParsedOverride } from './config-keys.js';
import { AGENT_ADMIN, ROOT_USER } from './validate.js';
import type { ConfigurationResult } from './protocol.js';
import { CouchtroveError, describeError } from '../util/errors.js';
import { AgentCore, type PersistedState } from './core.js';

/** The cluster's Erlang cookie and auth secret (ClusterMemberSettings.secretsFile, the control plane's 0600 file). */
async function readClusterSecrets(file: string): Promise<{ cookie: string; authSecret: string }> {
  const text = await readUntrusted(file, 4096);
  if (text === null) throw new CouchtroveError(`the cluster's secrets file ${file} is missing`);
  let v: { cookie?: unknown; authSecret?: unknown };
  try {
    v = JSON.parse(text) as typeof v;
  } catch {
    throw new CouchtroveError(`the cluster's secrets file ${file} is not JSON`);
  }
  if (typeof v.cookie !== 'string' || !/^[A-Za-z0-9]{32,255}$/.test(v.cookie) || typeof v.authSecret !== 'string' || !/^[A-Za-z0-9]{16,256}$/.test(v.authSecret)) {
    throw new CouchtroveError(`the cluster's secrets file ${file} must hold {"cookie", "authSecret"} of letters and digits`);
  }
  return { cookie: v.cookie, authSecret: v.authSecret };
}

export class InstanceConfig {
  constructor(private readonly c: AgentCore) {}

  /**
   * Lays out what CouchDB reads, every time from scratch (files.ts says who owns what): the instance
   * directory, etc/ and home/ stay the agent's (the instance's group may read them), local.ini is rebuilt from
   * what is allowed (local-ini.ts) with `existing` only as a source of values, vm.args rewritten, the cookie
   * made anew unless it is the instance's own regular file. Returns what was reset or dropped.
   */
  async writeInstanceFiles(st: PersistedState, existing: IniFile | null, overrides: ParsedOverride[]): Promise<{ reset: string[]; dropped: string[] }> {
    const s = st.settings;
    const f = instanceFiles(s);
    const own = ownership(s);
    const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    await fsp.mkdir(path.dirname(s.instanceDir), { recursive: true, mode: 0o700 });
    await ensureDir(s.instanceDir, me, own.isolated ? 0o711 : 0o700);
    const { owner, fileMode, dirMode } = own.readable;
    await ensureDir(f.etcDir, owner, dirMode);
    await ensureDir(f.home, owner, dirMode);
    // What is the instance's own is given by the privileged side (privileged.ts): in a container the agent cannot chown.
    const give = this.c.privileged;
    if (!(await ensureDir(f.smoosh, me, 0o700, own.instance))) await give.give(f.smoosh, own.instance, false);
    const cluster = s.cluster ? await readClusterSecrets(s.cluster.secretsFile) : null;
    const built = buildLocalIni({ settings: s, uuid: st.uuid, agentAdmin: this.c.admin!, overrides, existing, ...(cluster ? { authSecret: cluster.authSecret } : {}) });
    await replaceFile(f.localIni, built.text, fileMode, owner);
    await replaceFile(f.vmArgs, renderVmArgs(s), fileMode, owner);
    // A cluster member's cookie is the cluster's, given afresh at every start (a new inode: nothing to follow).
    if (cluster) await give.giveFile(f.cookie, cluster.cookie, 0o400, own.instance);
    else if (!(await isFileAsExpected(f.cookie, own.instance, 0o400))) await give.giveFile(f.cookie, randomBytes(24).toString('hex'), 0o400, own.instance);
    // The data directory's own entry only (its parent is not the instance's): what is inside is CouchDB's.
    const data = await fsp.lstat(s.dataDir).catch(() => null);
    if (data?.isDirectory() && s.runAs && (data.uid !== s.runAs.uid || data.gid !== s.runAs.gid || (data.mode & 0o777) !== 0o700)) await give.give(s.dataDir, s.runAs, false);
    return built;
  }

  /**
   * Before every start: local.ini is rebuilt from the allow-list (a server admin may have changed anything
   * over HTTP, and on an older layout CouchDB could write the file), and what was reset or dropped is logged.
   */
  async reassert(st: PersistedState): Promise<void> {
    const f = instanceFiles(st.settings);
    await this.c.withConfigLock(async () => {
      const text = await readUntrusted(f.localIni, 1 << 20);
      const overrides = parseOverrides(st.settings.overrides ?? {}, true);
      const { reset, dropped } = await this.writeInstanceFiles(st, text === null ? null : IniFile.parse(text), overrides);
      if (reset.length > 0) this.c.log(`settings changed over HTTP reset to the agent's before start: ${reset.join(', ')}`);
      if (dropped.length > 0) this.c.log(`local.ini entries outside what the agent allows dropped before start: ${dropped.join(', ')}`);
    });
  }

  /** local.ini, edited by the agent (CouchDB of an isolated instance cannot write it). Under the config lock. */
  async editIni(edit: (ini: IniFile) => void): Promise<void> {
    const s = this.c.requireState().settings;
    const f = instanceFiles(s);
    const ini = IniFile.parse((await readUntrusted(f.localIni, 1 << 20)) ?? '');
    edit(ini);
    const { owner, fileMode } = ownership(s).readable;
    await replaceFile(f.localIni, ini.toString(), fileMode, owner);
  }

  /**
   * A server admin set live is CouchDB's in memory only: its hash (CouchDB's own, read back once CouchDB has
   * hashed it) goes into local.ini so that it survives a restart. Under the config lock.
   */
  async persistAdmin(name: string): Promise<void> {
    const couch = this.c.client();
    const deadline = Date.now() + 30_000;
    let value = await couch.getConfig('admins', name);
    while (value !== null && !HASHED_ADMIN.test(value) && Date.now() < deadline) {
      await sleep(100);
      value = await couch.getConfig('admins', name);
    }
    if (value === null || !HASHED_ADMIN.test(value)) throw new CouchtroveError(`CouchDB did not hash the password of server admin ${name} within 30 s`);
    await this.editIni((ini) => ini.set('admins', name, value));
  }

  /** After a start: until then local.ini may hold the agent's password in plain (a new instance or admin.secret). */
  async keepAgentAdminHash(): Promise<void> {
    const f = instanceFiles(this.c.requireState().settings);
    try {
      await this.c.withConfigLock(async () => {
        const ini = IniFile.parse((await readUntrusted(f.localIni, 1 << 20)) ?? '');
        if (!HASHED_ADMIN.test(ini.get('admins', AGENT_ADMIN) ?? '')) await this.persistAdmin(AGENT_ADMIN);
      });
    } catch (err) {
      this.c.log(`could not keep the agent admin's hash in local.ini (it is kept in plain until the next start): ${describeError(err)}`);
    }
  }

  async applyConfiguration(overrides: Record<string, string | null>): Promise<ConfigurationResult> {
    const parsed = parseOverrides(overrides, false, true);
    const st = this.c.requireUsable();
    return this.c.withConfigLock(async () => {
      const couch = this.c.client();
      const running = this.c.proc?.running === true && (await couch.up());
      const file = instanceFiles(st.settings).localIni;
      const before = (await readUntrusted(file, 1 << 20)) ?? '';
      // local.ini first: live changes are made in memory only (CouchDB cannot write the file), and a delete
      // that is not persisted brings back a value the file still holds.
      await this.editIni((ini) => {
        for (const o of parsed) {
          if (o.value === null) ini.delete(o.section, o.key);
          else ini.set(o.section, o.key, o.value);
        }
      });
      const applied: string[] = [];
      const pending: string[] = [];
      const undo: { o: ParsedOverride; previous: string | null }[] = [];
      try {
        for (const o of parsed) {
          const name = `${o.section}/${o.key}`;
          if (o.kind !== 'live' || !running) {
            pending.push(name);
            continue;
          }
          // A reset deletes the key: CouchDB's default applies again.
          const previous = o.value === null ? await couch.getConfig(o.section, o.key) : await couch.putConfig(o.section, o.key, o.value, false);
          if (o.value === null) await couch.deleteConfig(o.section, o.key, false);
          undo.push({ o, previous });
          applied.push(name);
        }
      } catch (err) {
        for (const { o, previous } of undo.reverse()) {
          await (previous === null || previous === '' ? couch.deleteConfig(o.section, o.key, false) : couch.putConfig(o.section, o.key, previous, false)).catch(() => undefined);
        }
        const { owner, fileMode } = ownership(st.settings).readable;
        await replaceFile(file, before, fileMode, owner);
        throw err;
      }
      const next = { ...st.settings.overrides };
      for (const o of parsed) {
        if (o.value === null) delete next[`${o.section}/${o.key}`];
        else next[`${o.section}/${o.key}`] = o.value;
      }
      st.settings.overrides = next;
      if (running) st.pendingRestart = [...new Set([...st.pendingRestart, ...pending])];
      await this.c.persist();
      return { applied, pending, restartRequired: running && pending.length > 0 };
    });
  }

  async enableRoot(password?: string): Promise<{ name: 'root'; password: string }> {
    return this.c.withConfigLock(async () => {
      const wasEnabled = await this.c.mgr().isRootEnabled();
      const r = await this.c.mgr().enableRoot(password, false);
      await this.persistAdmin(r.name);
      // A new password for an enabled root keeps the time root was first enabled.
      const since = instanceFiles(this.c.requireState().settings).rootSince;
      if (!wasEnabled || (await readUntrusted(since, 64)) === null) await replaceFile(since, new Date().toISOString(), 0o600);
      return r;
    });
  }

  async isRootEnabled(): Promise<boolean> {
    return this.c.mgr().isRootEnabled();
  }

  /** A new cluster member's root: another member's hash as it is, so one password logs in on every node (docs/cluster.md). */
  async adoptRootHash(hash: string): Promise<void> {
    if (!HASHED_ADMIN.test(hash)) throw new CouchtroveError('the root password to adopt is not a CouchDB password hash');
    return this.c.withConfigLock(async () => {
      await this.c.client().putConfig('admins', ROOT_USER, hash, false);
      await this.editIni((ini) => ini.set('admins', ROOT_USER, hash));
      await replaceFile(instanceFiles(this.c.requireState().settings).rootSince, new Date().toISOString(), 0o600);
    });
  }

  /** Whether root is enabled and since when (null: enabled otherwise than by the agent, or by an older one). */
  async rootStatus(): Promise<{ enabled: boolean; since: string | null }> {
    const enabled = await this.c.mgr().isRootEnabled();
    const text = enabled ? await readUntrusted(instanceFiles(this.c.requireState().settings).rootSince, 64) : null;
    const since = text !== null && !Number.isNaN(Date.parse(text.trim())) ? new Date(text.trim()).toISOString() : null;
    return { enabled, since };
  }

  async disableRoot(): Promise<void> {
    return this.c.withConfigLock(async () => {
      // The file first: a delete that is not persisted brings back what the ini files still hold.
      await this.editIni((ini) => ini.delete('admins', ROOT_USER));
      await this.c.mgr().disableRoot(false);
      await fsp.rm(instanceFiles(this.c.requireState().settings).rootSince, { force: true });
    });
  }

  /**
   * A server admin can change the settings the agent manages in CouchDB's memory (where the data is, where it
   * listens and logs); an isolated CouchDB cannot keep them, but would use them until its next start. They
   * are set back live; returns the names reset. `agent serve` runs this every few seconds.
   */
  async enforceManaged(): Promise<string[]> {
    const st = this.c.state;
    if (!st || this.c.busy || st.desired !== 'RUNNING' || !this.c.admin || !this.c.proc?.running) return [];
    const couch = this.c.client(5000);
    // A setting the agent leaves unset in local.ini has the release's default.ini value (read by root, trusted).
    const defaults = IniFile.parse(await fsp.readFile(path.join(st.settings.couchdbHome, 'etc', 'default.ini'), 'utf8').catch(() => ''));
    // The whole configuration in one request, not a request per section: each is a line in the tenant's log.
    const all = await couch.getAllConfig();
    this.c.answered();
    const reset: string[] = [];
    for (const m of managedSettings(st.settings, st.uuid)) {
      const running = all[m.section] ?? {};
      const now = running[m.key] === undefined || running[m.key] === '' ? null : running[m.key];
      const fallback = defaults.get(m.section, m.key);
      if (now === (m.value ?? (fallback === undefined || fallback === '' ? null : fallback))) continue;
      if (m.value === null) await couch.deleteConfig(m.section, m.key, false);
      else await couch.putConfig(m.section, m.key, m.value, false);
      reset.push(`${m.section}/${m.key}`);
    }
    if (reset.length > 0) this.c.log(`settings changed over HTTP reset to the agent's while running: ${reset.join(', ')}`);
    return reset;
  }
}
