// The agent's continuous archiving loop (docs/agent.md, "archive"): a cut every `interval` seconds while
// CouchDB runs, retention by time window every few minutes, and a status the control plane reads. A cut
// that fails (storage down) is retried at the next tick from the last cut that succeeded, so the next
// good cut carries everything written meanwhile: archiving catches up by itself.
import { ArchiveStream, expireArchive, archiveWindow } from '../backup/archive.js';
import type { BackupOptions } from '../backup/types.js';
import { openStorage, type Backend } from '../storage/index.js';
import { readKeyFile, type KeyMaterial } from '../crypto/keys.js';
import { describeError } from '../util/errors.js';
import type { ArchiveSettings, ArchiveStatus } from './protocol.js';

export const DEFAULT_ARCHIVE_INTERVAL = 5;
export const DEFAULT_KEEP_DAYS = 7;
/** Retention runs at most this often (ms). */
const EXPIRE_EVERY_MS = 5 * 60_000;

export interface ArchiverSource {
  dataDir: string;
  configDir?: string;
  couchdb: () => BackupOptions['couchdb'];
  labels: Record<string, string>;
  /** Whether a cut may run now (CouchDB running, no prepare or restore under way). */
  ready: () => boolean;
}

export class Archiver {
  #settings: ArchiveSettings & { enabled: boolean };
  #stream: ArchiveStream | null = null;
  #storage: Backend | null = null;
  #key: KeyMaterial | undefined;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #lastStart = 0;
  #lastExpire = 0;
  #error: string | null = null;
  #failingSince: number | null = null;
  #oldest: number | null = null;
  /** Kept apart from the writer, which is dropped after a failed cut. */
  #restorePoint: number | null = null;
  #latestCut: string | null = null;
  readonly #counts = { base: 0, incremental: 0, unchanged: 0, failed: 0 };
  #bytesStored = 0;
  #bytesCopied = 0;
  #cpuUs = 0;

  constructor(
    settings: ArchiveSettings | undefined,
    private readonly source: ArchiverSource,
    private readonly log: (line: string) => void,
  ) {
    this.#settings = settings ?? { enabled: false };
  }

  get settings(): ArchiveSettings {
    return { ...this.#settings };
  }

  /** Applies new settings; the next tick uses them. A changed repository or stream starts a new writer. */
  async configure(next: ArchiveSettings): Promise<void> {
    await this.#running;
    const prev = this.#settings;
    if (prev.storage !== next.storage || prev.stream !== next.stream || prev.keyFile !== next.keyFile || prev.keyId !== next.keyId || !next.enabled) await this.#closeStream();
    this.#settings = { ...next };
    if (next.enabled) {
      this.#error = null;
      this.#failingSince = null;
    }
  }

  /** Ticks every second; a cut runs when `interval` seconds have passed since the last one began. */
  start(tickMs = 250): () => void {
    this.#timer = setInterval(() => {
      if (this.#running || !this.#settings.enabled || !this.source.ready()) return;
      const interval = (this.#settings.interval ?? DEFAULT_ARCHIVE_INTERVAL) * 1000;
      if (Date.now() - this.#lastStart < interval) return;
      this.#running = this.runOnce().finally(() => (this.#running = null));
    }, tickMs);
    this.#timer.unref();
    return () => {
      if (this.#timer) clearInterval(this.#timer);
      this.#timer = null;
    };
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#running;
    await this.#closeStream();
  }

  async #closeStream(): Promise<void> {
    this.#stream = null;
    const s = this.#storage;
    this.#storage = null;
    await s?.close().catch(() => undefined);
  }

  async #open(): Promise<ArchiveStream> {
    if (this.#stream) return this.#stream;
    const s = this.#settings;
    if (!s.storage || !s.stream) throw new Error('archiving is enabled without a repository and a stream');
    this.#key = s.keyFile ? await readKeyFile(s.keyFile, s.keyId) : undefined;
    this.#storage = await openStorage(s.storage);
    this.#stream = new ArchiveStream({
      storage: this.#storage,
      stream: s.stream,
      key: this.#key,
      dataDir: this.source.dataDir,
      configDir: this.source.configDir,
      couchdb: this.source.couchdb(),
      compression: s.compression,
      labels: this.source.labels,
      rebaseShare: s.rebaseShare,
      baseIntervalMs: (s.baseIntervalHours ?? 24) * 3_600_000,
    });
    return this.#stream;
  }

  /** One cut (and retention when due). Errors are kept for status, never thrown. */
  async runOnce(): Promise<void> {
    this.#lastStart = Date.now();
    const cpu = process.cpuUsage();
    try {
      const stream = await this.#open();
      const r = await stream.cut();
      this.#counts[r.kind]++;
      this.#restorePoint = r.restorePoint;
      this.#latestCut = stream.head.latest;
      this.#bytesStored += r.size;
      this.#bytesCopied += r.bytes;
      if (this.#error) this.log(`archive ${this.#settings.stream}: cuts succeed again (failing since ${new Date(this.#failingSince ?? 0).toISOString()}): caught up to ${new Date(r.restorePoint).toISOString()}`);
      this.#error = null;
      this.#failingSince = null;
      if (Date.now() - this.#lastExpire > EXPIRE_EVERY_MS) {
        this.#lastExpire = Date.now();
        const keep = (this.#settings.keepDays ?? DEFAULT_KEEP_DAYS) * 86_400_000;
        const ex = await expireArchive(this.#storage!, this.#settings.stream!, keep);
        if (ex.removed.length) this.log(`archive ${this.#settings.stream}: retention removed ${ex.removed.length} cuts older than ${this.#settings.keepDays ?? DEFAULT_KEEP_DAYS} days`);
        this.#oldest = (await archiveWindow(this.#storage!, this.#settings.stream!)).oldest;
      }
    } catch (err) {
      this.#counts.failed++;
      const msg = describeError(err);
      if (msg !== this.#error) this.log(`archive ${this.#settings.stream}: cut failed: ${msg}`);
      this.#error = msg;
      this.#failingSince ??= Date.now();
      // A writer whose cut failed half-way may hold a catalog that is not in the repository: start over
      // from what the repository holds.
      await this.#closeStream();
    } finally {
      const used = process.cpuUsage(cpu);
      this.#cpuUs += used.user + used.system;
    }
  }

  status(): ArchiveStatus {
    const s = this.#settings;
    const interval = s.interval ?? DEFAULT_ARCHIVE_INTERVAL;
    const rp = this.#restorePoint;
    const lag = rp === null ? null : Math.max(0, (Date.now() - rp) / 1000);
    const behind = s.enabled && (this.#error !== null || (lag !== null && lag > Math.max(3 * interval, interval + 10)));
    return {
      enabled: s.enabled,
      interval,
      keepDays: s.keepDays ?? DEFAULT_KEEP_DAYS,
      stream: s.stream ?? null,
      restorePoint: rp === null ? null : new Date(rp).toISOString(),
      lagSeconds: lag === null ? null : Math.round(lag * 10) / 10,
      behind,
      latestCut: this.#latestCut,
      error: this.#error,
      failingSince: this.#failingSince === null ? null : new Date(this.#failingSince).toISOString(),
      cuts: { ...this.#counts },
      bytesStored: this.#bytesStored,
      bytesCopied: this.#bytesCopied,
      cpuSeconds: Math.round(this.#cpuUs / 1000) / 1000,
      oldestRestorePoint: this.#oldest === null ? null : new Date(this.#oldest).toISOString(),
    };
  }
}
