// Progress bar for long engine operations: only on a terminal, never with --json.
import { createRequire } from 'node:module';
import type CliProgress from 'cli-progress';
import type { Progress } from '../backup/types.js';
import type { CommandIO } from './command.js';
import { formatBytes } from '../util/format.js';

export { formatBytes };

export interface ProgressBar {
  update: (p: Progress) => void;
  stop: () => void;
}

const MiB = 1024 * 1024;

export function progressBar(io: CommandIO, json: boolean | undefined, label: string): ProgressBar | undefined {
  if (json || !io.stderr.isTTY) return undefined;
  // Loaded only for a bar: runs with --json or without a terminal are spared its ~7 ms of loading.
  const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof CliProgress;
  const bar = new cliProgress.SingleBar(
    {
      stream: io.stderr,
      format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | {rate} MiB/s | ETA {eta_formatted} | {filesDone}/{filesTotal} files`,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let begun = false;
  return {
    update: (p) => {
      const payload = {
        doneMiB: (p.bytesDone / MiB).toFixed(1),
        totalMiB: (p.bytesTotal / MiB).toFixed(1),
        rate: (p.bytesDone / MiB / Math.max((Date.now() - started) / 1000, 0.001)).toFixed(1),
        filesDone: p.filesDone,
        filesTotal: p.filesTotal,
      };
      if (!begun) {
        bar.start(Math.max(p.bytesTotal, 1), p.bytesDone, payload);
        begun = true;
      } else bar.update(p.bytesDone, payload);
    },
    stop: () => {
      if (begun) bar.stop();
    },
  };
}


/** What one poll of a task's resource says: its state and, for backups, the bytes the API reports. */
export interface TaskSnapshot {
  state: string;
  progress?: { bytesDone: number; bytesTotal: number } | undefined;
}

const BAR = 24;

/**
 * Renders `--wait` from what the API reports, never from guesses: the state, and where the API gives
 * bytes, done/total, rate and ETA. Percent and bytes only move forward, so a poll that reads an older
 * figure (or a total that grew) cannot pull the bar back.
 */
export class WaitRenderer {
  private readonly started: number;
  private percent = 0;
  private done = 0;
  private total = 0;
  private first?: { t: number; bytes: number };
  private state = '';

  constructor(private readonly label: string, private readonly now: () => number = Date.now) {
    this.started = now();
  }

  /** The line for this poll; `changed` is whether the state differs from the previous poll. */
  update(s: TaskSnapshot, final = false): { line: string; percent: number | undefined; changed: boolean } {
    const changed = s.state !== this.state;
    this.state = s.state;
    const t = this.now();
    const p = s.progress;
    if (p && Number.isFinite(p.bytesDone) && Number.isFinite(p.bytesTotal) && p.bytesTotal > 0) {
      this.done = Math.max(this.done, p.bytesDone);
      this.total = Math.max(this.total, p.bytesTotal, this.done);
      this.first ??= { t, bytes: this.done };
      this.percent = Math.max(this.percent, Math.min(100, Math.floor((100 * this.done) / this.total)));
    }
    if (final && this.total > 0) {
      this.percent = 100;
      this.done = this.total;
    }
    const parts = [`${this.label} ${s.state}`];
    if (this.total > 0) {
      const filled = Math.round((BAR * this.percent) / 100);
      parts.push(`[${'='.repeat(filled)}${'-'.repeat(BAR - filled)}] ${this.percent}%`, `${formatBytes(this.done)}/${formatBytes(this.total)}`);
      const secs = this.first ? (t - this.first.t) / 1000 : 0;
      // A rate needs two samples apart in time; until then none is shown rather than a made-up one. Once the
      // API stops reporting bytes (the restore is over, the task goes on), neither rate nor ETA is current.
      if (this.first && secs > 0 && this.done > this.first.bytes && (p || final)) {
        const rate = (this.done - this.first.bytes) / secs;
        parts.push(`${formatBytes(rate)}/s`);
        if (!final && this.done < this.total) parts.push(`ETA ${duration((this.total - this.done) / rate)}`);
      }
    }
    parts.push(`elapsed ${duration((t - this.started) / 1000)}`);
    return { line: parts.join(' '), percent: this.total > 0 ? this.percent : undefined, changed };
  }
}

function duration(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
