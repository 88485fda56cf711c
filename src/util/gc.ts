// Prompt collection of record buffers. Every record moves a multi-MiB buffer between threads, and V8
// frees a buffer only when the small JS object wrapping it is collected: its heuristics let tens of
// MiB of such garbage pile up per thread first. A minor GC every few records keeps resident memory
// at the live set (measured: 220 MiB -> 158 MiB peak RSS for a 1 GiB backup, same speed).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let collect: Gc | undefined;
try {
  setFlagsFromString('--expose-gc');
  collect = runInNewContext('gc') as Gc;
} catch {
  collect = undefined; // memory is then bounded by V8's own heuristics, just higher
}

const EVERY = 8;
let count = 0;

/** Call once per record handled; collects young garbage every few records. */
export function recordDone(): void {
  if (collect && ++count % EVERY === 0) collect({ type: 'minor' });
}
