// Progress bar for long engine operations: only on a terminal, never with --json.
import { createRequire } from 'node:module';
import type CliProgress from 'cli-progress';
import type { Progress } from '../backup/types.js';
import type { CommandIO } from './command.js';

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

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
