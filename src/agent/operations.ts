// What operators read: volume use and the quota on client writes, data statistics, the log files.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { AgentError, invalid } from './errors.js';
import { QuotaGuard, type QuotaState } from './quota.js';
import { instanceFiles } from './files.js';
import type { DataStats, LogFileInfo } from './protocol.js';
import { maskSecrets, requestLineOf, rotateIfLarge, rotatedBytes, tailFile, tailFileWithout } from './logs.js';
import { AgentCore, usedBytes } from './core.js';

export class Operations {
  readonly #guard = new QuotaGuard();
  constructor(private readonly c: AgentCore) {}

  async volumeUsage(): Promise<{ used: number; total: number }> {
    const s = this.c.requireState().settings;
    const used = await usedBytes(s.dataDir);
    let total = s.volumeBytes;
    if (total === undefined) {
      const fsStat = await fsp.statfs(s.dataDir);
      total = fsStat.blocks * fsStat.bsize;
    }
    return { used, total };
  }

  async dataStats(): Promise<DataStats> {
    return this.c.mgr().dataStats();
  }

  /** The log files: CouchDB's (once prepared) and the agent's own. */
  #logFiles(): Map<string, string> {
    const m = new Map<string, string>();
    if (this.c.state) m.set('couchdb', instanceFiles(this.c.state.settings).log);
    m.set('agent', path.join(this.c.agentDir, 'agent.log'));
    return m;
  }

  async logs(): Promise<LogFileInfo[]> {
    const out: LogFileInfo[] = [];
    for (const [name, file] of this.#logFiles()) {
      const size = await fsp.stat(file).then((x) => x.size, () => 0);
      out.push({ name, size, rotatedBytes: await rotatedBytes(file, this.c.logKeep), maxBytes: this.c.logMaxBytes, keep: this.c.logKeep });
    }
    return out;
  }

  async readLog(name: string, lines: number): Promise<{ name: string; text: string; lines: number }> {
    const file = this.#logFiles().get(name);
    if (!file) throw new AgentError('NOT_FOUND', `no log ${JSON.stringify(String(name).slice(0, 40))}: the logs are ${[...this.#logFiles().keys()].join(', ')}`);
    if (!Number.isInteger(lines) || lines < 0 || lines > 100_000) throw invalid('lines must be 0 to 100000');
    // CouchDB's log is the tenant's: the agent's own requests (its admin user's lines) are left out of it
    // (docs/operations.md); agent.log and the file on disk keep everything.
    const raw = name === 'couchdb' && this.c.admin ? await tailFileWithout(file, lines, requestLineOf(this.c.admin.username)) : await tailFile(file, lines);
    // CouchDB logs request lines, never passwords; the agent's admin password is masked all the same.
    const text = maskSecrets(raw, this.c.admin ? [this.c.admin.password] : []);
    return { name, text, lines: text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0) };
  }

  /** Rotates every log file that reached its cap (see ./logs.ts); returns the names rotated. */
  async rotateLogs(): Promise<string[]> {
    const done: string[] = [];
    for (const [name, file] of this.#logFiles()) if (await rotateIfLarge(file, this.c.logMaxBytes, this.c.logKeep)) done.push(name);
    return done;
  }

  /**
   * Client writes beyond the volume quota are refused (quota.ts). `agent serve` runs this every few
   * seconds; it does nothing without a quota or while CouchDB is not running.
   */
  async enforceQuota(): Promise<QuotaState | null> {
    const st = this.c.state;
    const quota = st?.settings.volumeBytes;
    if (!st || quota === undefined || this.c.busy || st.desired !== 'RUNNING' || !this.c.admin || !this.c.proc?.running) return null;
    const { guarded, ...state } = await this.#guard.enforce(this.c.client(), await usedBytes(st.settings.dataDir), quota, st.quotaGuarded === true);
    if (guarded !== (st.quotaGuarded === true)) {
      st.quotaGuarded = guarded;
      await this.c.persist();
    }
    if (state.full) this.c.log(`volume full: ${state.used} of ${state.quota} bytes used; client writes are refused`);
    return state;
  }
}
