// The log files of an instance (CouchDB's log, the agent's log) and their size cap. Both are written by
// processes that hold them open in append mode (CouchDB's stderr, the agent's stdout/stderr), so the
// agent rotates them by copy and truncate: the writer's next append lands at the new end of the same
// file, nobody has to reopen anything. A line written between the copy and the truncate can be lost;
// that is the price of rotating a file another process writes without its help (logrotate's copytruncate).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';

/** Default cap of each log file, and how many rotated files are kept (so at most (1 + keep) x cap on disk). */
export const LOG_MAX_BYTES = 10 * 1024 * 1024;
export const LOG_KEEP = 3;
/** The most a read of a whole log returns. */
export const LOG_READ_MAX = 16 * 1024 * 1024;

async function size(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

/** Rotates file when it has reached maxBytes: file.N-1 -> file.N ..., file -> file.1 (copied), file truncated. Returns whether it did. */
export async function rotateIfLarge(file: string, maxBytes = LOG_MAX_BYTES, keep = LOG_KEEP): Promise<boolean> {
  if ((await size(file)) < maxBytes) return false;
  await fsp.rm(`${file}.${keep}`, { force: true });
  for (let i = keep - 1; i >= 1; i--) {
    await fsp.rename(`${file}.${i}`, `${file}.${i + 1}`).catch(() => undefined);
  }
  if (keep > 0) await fsp.copyFile(file, `${file}.1`);
  await fsp.truncate(file, 0);
  return true;
}

/** Bytes in the rotated files kept beside file. */
export async function rotatedBytes(file: string, keep = LOG_KEEP): Promise<number> {
  let n = 0;
  for (let i = 1; i <= keep; i++) n += await size(`${file}.${i}`);
  return n;
}

/** The last `lines` lines of file (0: all of it, at most LOG_READ_MAX bytes from the end). A missing file is empty. */
export async function tailFile(file: string, lines: number): Promise<string> {
  let h: fsp.FileHandle;
  try {
    h = await fsp.open(file, fs.constants.O_RDONLY);
  } catch {
    return '';
  }
  try {
    const total = (await h.stat()).size;
    // Read backwards in chunks until enough newlines are seen.
    let start = total;
    let text = '';
    const chunk = 64 * 1024;
    while (start > 0 && total - start < LOG_READ_MAX) {
      const from = Math.max(0, start - chunk);
      const buf = Buffer.alloc(start - from);
      await h.read(buf, 0, buf.length, from);
      text = buf.toString('utf8') + text;
      start = from;
      if (lines > 0 && text.split('\n').length > lines + 1) break;
    }
    if (lines === 0) return text;
    const all = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
    const picked = all.slice(-lines);
    return picked.length ? `${picked.join('\n')}\n` : '';
  } finally {
    await h.close();
  }
}

/** Masks every secret (of 4 characters or more) in text. */
export function maskSecrets(text: string, secrets: string[]): string {
  let t = text;
  for (const s of secrets) if (s.length >= 4) t = t.split(s).join('***');
  return t;
}

/**
 * A request line of CouchDB's log made by `user` ("[notice] TIME NODE <PID> NONCE HOST:PORT PEER USER METHOD
 * PATH STATUS ..."; the development engine writes the same fields). The agent's own requests (its admin
 * user) are couchtrove's polling, not the tenant's traffic.
 */
export function requestLineOf(user: string): RegExp {
  const u = user.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^\\[notice\\] \\S+ \\S+ <[^>]*> \\S+ \\S+ \\S+ ${u} [A-Z]+ \\S+ \\d{3}\\b`);
}

/**
 * The last `lines` lines of file without those `drop` matches (0: all of it, at most LOG_READ_MAX bytes):
 * read further back, 4 times more each round, until enough are kept or the whole file is read.
 */
export async function tailFileWithout(file: string, lines: number, drop: RegExp): Promise<string> {
  const keep = (text: string): string[] => (text.endsWith('\n') ? text.slice(0, -1) : text).split('\n').filter((l) => l !== '' && !drop.test(l));
  if (lines === 0) {
    const kept = keep(await tailFile(file, 0));
    return kept.length ? `${kept.join('\n')}\n` : '';
  }
  let kept: string[] = [];
  for (let n = lines; ; n *= 4) {
    const text = await tailFile(file, n);
    kept = keep(text);
    const read = text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
    if (kept.length >= lines || read < n || Buffer.byteLength(text) >= LOG_READ_MAX) break;
  }
  const picked = kept.slice(-lines);
  return picked.length ? `${picked.join('\n')}\n` : '';
}
