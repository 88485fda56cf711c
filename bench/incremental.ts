// Incremental backup cost (issue 7): after 1% new data is appended to the 1 GiB benchmark data
// directory, an incremental backup against a full one, both through the CLI (zstd + key). Writes
// docs/benchmarks.md. Usage: npm run build && node dist/bench/incremental.js [--runs 3] [--work DIR]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, BIN, buildDatadir, machine, median, ROOT, timed, writeSection } from './lib.js';
import { listFiles } from '../test/support/tree.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, work: { type: 'string', default: path.join(ROOT, 'bench/work') } } });
const runs = Number(values.runs);
const work = path.resolve(values.work!);
await fs.mkdir(work, { recursive: true });
const base = path.join(work, 'datadir-1g');
const total = await buildDatadir(base, 2 ** 30);
const key = await benchKey(path.join(work, 'bench.key'));

const fulls: number[] = [];
const incs: number[] = [];
// Inside the engine: from the start of createBackup to the manifest written (the summary's created and
// completed), without the process start-up and module loading that the wall times include.
const fullEngine: number[] = [];
const incEngine: number[] = [];
const engineSeconds = (s: { created: string; completed: string }) => (Date.parse(s.completed) - Date.parse(s.created)) / 1000;
let fullSize = 0;
let incSize = 0;
let incBytes = 0;
let appended = 0;
for (let run = 0; run < runs; run++) {
  const live = path.join(work, 'incremental-live');
  const repo = path.join(work, 'incremental-repo');
  await fs.rm(live, { recursive: true, force: true });
  await fs.rm(repo, { recursive: true, force: true });
  execFileSync('cp', ['-a', base, live]);
  const full = timed(`node ${BIN} agent backup --data-dir ${live} --storage file://${repo} --key-file ${key} --json > ${work}/full.json`);
  const f = JSON.parse(await fs.readFile(`${work}/full.json`, 'utf8')) as { id: string; size: number; created: string; completed: string };

  // 1% new data, appended to every shard in proportion to its size, taken from the shard's own bytes
  // so that it compresses like CouchDB data does.
  appended = 0;
  for (const p of await listFiles(path.join(live, 'shards'))) {
    if (!p.endsWith('.couch')) continue;
    const size = (await fs.stat(p)).size;
    const n = Math.ceil(size / 100);
    const fh = await fs.open(p, 'r+');
    const chunk = Buffer.alloc(n);
    await fh.read(chunk, 0, n, Math.floor(size / 3));
    await fh.write(chunk, 0, n, size);
    await fh.close();
    appended += n;
  }
  const inc = timed(`node ${BIN} agent backup --data-dir ${live} --storage file://${repo} --key-file ${key} --parent ${f.id} --json > ${work}/inc.json`);
  const i = JSON.parse(await fs.readFile(`${work}/inc.json`, 'utf8')) as { size: number; bytes: number; created: string; completed: string };
  fulls.push(full.seconds);
  incs.push(inc.seconds);
  fullEngine.push(engineSeconds(f));
  incEngine.push(engineSeconds(i));
  fullSize = f.size;
  incSize = i.size;
  incBytes = i.bytes;
  console.error(`run ${run + 1}: full ${full.seconds} s (engine ${engineSeconds(f)} s), ${f.size} B stored; incremental ${inc.seconds} s (engine ${engineSeconds(i)} s), ${i.size} B stored, ${i.bytes} B read`);
}

const ft = median(fulls);
const it = median(incs);
const fe = median(fullEngine);
const ie = median(incEngine);
await writeSection(
  'incremental',
  `## Incremental backup (issue 7)

Measured ${new Date().toISOString().slice(0, 10)} on ${machine()}.
Command: \`npm run build && node dist/bench/incremental.js --runs ${runs}\` (bench/incremental.ts). A copy of the 1 GiB
benchmark data directory (${(total / 1e6).toFixed(0)} MB) is backed up in full, then ${(appended / 1e6).toFixed(1)} MB (1%) is
appended across its shards and an incremental backup is taken on top; both through the CLI with zstd and a key,
process start-up included. Medians of ${runs} runs.

| | wall time (CLI) | engine time | stored | read |
|---|---|---|---|---|
| full backup | ${ft.toFixed(2)} s | ${fe.toFixed(3)} s | ${(fullSize / 1e6).toFixed(1)} MB | ${(total / 1e6).toFixed(0)} MB |
| incremental after 1% appended | ${it.toFixed(2)} s | ${ie.toFixed(3)} s | ${(incSize / 1e6).toFixed(2)} MB | ${(incBytes / 1e6).toFixed(1)} MB |
| incremental / full | ${((it / ft) * 100).toFixed(1)}% | ${((ie / fe) * 100).toFixed(1)}% | ${((incSize / fullSize) * 100).toFixed(1)}% | |

Wall time is the whole \`couchtrove agent backup\` process under GNU time; engine time is the backup's own
\`created\` to \`completed\` (milliseconds), without the ~0.1 s of Node start-up and module loading that every CLI
run pays (\`node -e 0\` alone takes 0.05 s here).
Target: at most 5% of the full backup's time and bytes. Runs (s): full ${fulls.join(', ')}; incremental ${incs.join(', ')}; engine: full ${fullEngine.join(', ')}, incremental ${incEngine.join(', ')}.
`,
);
console.error('wrote docs/benchmarks.md');
