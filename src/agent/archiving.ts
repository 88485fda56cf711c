// Continuous archiving (archiver.ts): switched on and off, its status, and its loop.
import * as path from 'node:path';
import { invalid } from './errors.js';
import { instanceFiles } from './files.js';
import { checkStorageUrl } from './validate.js';
import type { ArchiveSettings, ArchiveStatus } from './protocol.js';
import { Archiver } from './archiver.js';
import { CODECS } from '../config/option.js';
import { KEY_ID } from '../crypto/keys.js';
import { AgentCore, couchUrl, type PersistedState } from './core.js';

export class Archiving {
  #archiver: Archiver | null = null;

  constructor(private readonly c: AgentCore) {}

  #archiverFor(st: PersistedState): Archiver {
    if (!this.#archiver) {
      const s = st.settings;
      this.#archiver = new Archiver(st.archive, {
        dataDir: s.dataDir,
        configDir: instanceFiles(s).etcDir,
        couchdb: () => ({ url: couchUrl(s), username: this.c.admin?.username, password: this.c.admin?.password }),
        labels: { instanceId: s.instanceId },
        // Never during a prepare (the data directory is being replaced) or while CouchDB is down.
        ready: () => this.c.busy !== 'prepare' && this.c.state?.building === false && !this.c.state.restoreFailed && this.c.admin !== null && this.c.proc?.running === true,
      }, this.c.log);
    }
    return this.#archiver;
  }

  async configureArchive(input: ArchiveSettings): Promise<ArchiveStatus> {
    const st = this.c.requireState();
    if (!input || typeof input !== 'object' || typeof input.enabled !== 'boolean') throw invalid('archive settings must be {enabled, storage?, keyFile?, stream?, interval?, keepDays?, rebaseShare?, baseIntervalHours?, compression?}');
    const next: ArchiveSettings = { ...(st.archive ?? {}), ...input };
    next.stream ??= st.settings.instanceId;
    if (next.enabled) {
      next.storage = checkStorageUrl(next.storage);
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(next.stream)) throw invalid(`archive stream must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got ${JSON.stringify(next.stream)}`);
      if (next.keyFile !== undefined && (typeof next.keyFile !== 'string' || !path.isAbsolute(next.keyFile))) throw invalid('keyFile must be an absolute path');
      if (next.keyId !== undefined && (typeof next.keyId !== 'string' || !KEY_ID.test(next.keyId))) throw invalid('keyId must be like instance:<id>');
    }
    const num = (v: unknown, name: string, min: number, max: number) => {
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)) throw invalid(`archive ${name} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
    };
    num(next.interval, 'interval', 1, 3600);
    num(next.keepDays, 'keepDays', 0.0001, 3650);
    num(next.rebaseShare, 'rebaseShare', 0.01, 100);
    num(next.baseIntervalHours, 'baseIntervalHours', 0.01, 24 * 365);
    if (next.compression !== undefined && !(CODECS as readonly string[]).includes(next.compression)) throw invalid(`compression must be one of ${CODECS.join(', ')}`);
    await this.#archiverFor(st).configure(next);
    st.archive = next;
    await this.c.persist();
    this.c.log(`archiving ${next.enabled ? `on: a cut every ${next.interval ?? 5} s to archive/${next.stream}/ of ${next.storage}` : 'off'}`);
    return this.#archiverFor(st).status();
  }

  async archiveStatus(): Promise<ArchiveStatus> {
    return this.#archiverFor(this.c.requireState()).status();
  }

  /** For `agent serve`: runs the archiving loop (it does nothing while archiving is off); returns the stop function. */
  startArchiver(): () => Promise<void> {
    let stopTimer: (() => void) | null = null;
    const wait = setInterval(() => {
      if (!this.c.state || stopTimer) return;
      stopTimer = this.#archiverFor(this.c.state).start();
      clearInterval(wait);
    }, 200);
    wait.unref();
    return async () => {
      clearInterval(wait);
      stopTimer?.();
      await this.#archiver?.stop();
    };
  }
}
