// Backup and restore throughput and memory of `couchtrove agent backup|restore` against the pipelines
// Trove used and plain tar+zstd, on the same data in one run (issue 2). Not a test: it writes
// docs/benchmarks.md. Usage: npm run bench -- [--sizes 1,4] [--runs 3] [--work DIR]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, BIN, buildDatadir, machine, median, ROOT, timed, writeSection, type Timed } from './lib.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '1,4' }, runs: { type: 'string', default: '3' }, work: { type: 'string', default: path.join(ROOT, 'bench/work') } } });
const GiB = 2 ** 30;
const runs = Number(values.runs);
const work = path.resolve(values.work!);
const rows: string[] = [];
const notes: string[] = [];

function best(label: string, cmd: string, setup?: () => Promise<void>): Promise<Timed & { all: number[] }> {
  return (async () => {
    const all: Timed[] = [];
    for (let i = 0; i < runs; i++) {
      await setup?.();
      // Nothing of the previous run (its deletions, the other contender's unsynced writes) is left for
      // this one to write back: every contender starts from a clean page cache state.
      execFileSync('sync');
      all.push(timed(cmd));
    }
    const secs = all.map((t) => t.seconds);
    console.error(`${label}: ${secs.join(' s, ')} s; peak RSS ${Math.max(...all.map((t) => t.maxRssMiB)).toFixed(0)} MiB`);
    return { seconds: median(secs), maxRssMiB: Math.max(...all.map((t) => t.maxRssMiB)), all: secs };
  })();
}

await fs.mkdir(work, { recursive: true });
const key = await benchKey(path.join(work, 'bench.key'));
const pass = 'trove-style-benchmark-passphrase';

for (const gib of values.sizes!.split(',').map(Number)) {
  const data = path.join(work, `datadir-${gib}g`);
  const bytes = await buildDatadir(data, gib * GiB);
  const mb = bytes / 1e6;
  const out = path.join(work, 'out');
  const repo = path.join(work, 'repo');
  const restoreDir = path.join(work, 'restored');
  const clean = async () => {
    await fs.rm(repo, { recursive: true, force: true });
    await fs.rm(out, { recursive: true, force: true });
    await fs.mkdir(out, { recursive: true });
  };
  const cleanRestore = async () => {
    await fs.rm(restoreDir, { recursive: true, force: true });
    await fs.mkdir(restoreDir, { recursive: true });
  };
  console.error(`data directory: ${data}, ${bytes} bytes`);

  const ours = await best('couchtrove backup (zstd-1 + AES-256-GCM + SHA-256)', `node ${BIN} agent backup --data-dir ${data} --storage file://${repo} --key-file ${key} --json > ${out}/summary.json`, clean);
  const summary = JSON.parse(await fs.readFile(path.join(out, 'summary.json'), 'utf8')) as { id: string; size: number };
  const stored = summary.size;
  const ourRestore = await best('couchtrove restore', `node ${BIN} agent restore --storage file://${repo} --backup ${summary.id} --key-file ${key} --data-dir ${restoreDir} --json > /dev/null`, cleanRestore);

  const tarZstd = await best('tar cf - | zstd -1 -T0', `tar cf - -C ${data} . | zstd -1 -T0 -q > ${out}/data.tar.zst`, async () => fs.rm(path.join(out, 'data.tar.zst'), { force: true }));
  const zstdSize = (await fs.stat(path.join(out, 'data.tar.zst'))).size;
  const zstdRestore = await best('zstd -d | tar x', `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir}`, cleanRestore);
  // Our restore flushes every file to disk before it reports success; tar does not. This line shows what durability costs.
  const zstdRestoreSync = await best('zstd -d | tar x; sync -f', `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir} && sync -f ${restoreDir}`, cleanRestore);

  let trove: (Timed & { all: number[] }) | undefined;
  let troveRestore: (Timed & { all: number[] }) | undefined;
  let troveSize = 0;
  if (gib <= 1) {
    trove = await best("Trove's tar | gzip | openssl", `tar cpf - -C ${data} . | gzip | openssl enc -aes-256-cbc -salt -pass pass:${pass} > ${out}/trove.enc`);
    troveSize = (await fs.stat(path.join(out, 'trove.enc'))).size;
    troveRestore = await best("Trove's openssl -d | gunzip | tar x", `openssl enc -d -aes-256-cbc -pass pass:${pass} < ${out}/trove.enc | gunzip | tar xf - -C ${restoreDir}`, cleanRestore);
  }
  await cleanRestore();

  const rate = (t: Timed) => `${(mb / t.seconds).toFixed(0)} MB/s`;
  // Throughput of ours relative to theirs: their time over ours.
  const ratio = (ours: Timed, theirs: Timed) => (theirs.seconds / ours.seconds).toFixed(2);
  rows.push(`| ${gib} GiB (${mb.toFixed(0)} MB) | couchtrove backup, zstd-1 + AES-256-GCM + SHA-256 | ${ours.seconds.toFixed(2)} s | ${rate(ours)} | ${(stored / 1e6).toFixed(0)} MB | ${ours.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`tar cf - DIR \\| zstd -1 -T0\` | ${tarZstd.seconds.toFixed(2)} s | ${rate(tarZstd)} | ${(zstdSize / 1e6).toFixed(0)} MB | ${tarZstd.maxRssMiB.toFixed(0)} MiB |`);
  if (trove) rows.push(`| | Trove: \`tar cpf - \\| gzip \\| openssl enc -aes-256-cbc\` | ${trove.seconds.toFixed(2)} s | ${rate(trove)} | ${(troveSize / 1e6).toFixed(0)} MB | ${trove.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | couchtrove restore (decrypt, decompress, SHA-256 check, fdatasync) | ${ourRestore.seconds.toFixed(2)} s | ${rate(ourRestore)} | | ${ourRestore.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`zstd -d \\| tar x\` | ${zstdRestore.seconds.toFixed(2)} s | ${rate(zstdRestore)} | | ${zstdRestore.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`zstd -d \\| tar x\` then \`sync -f\` (durable, as ours) | ${zstdRestoreSync.seconds.toFixed(2)} s | ${rate(zstdRestoreSync)} | | ${zstdRestoreSync.maxRssMiB.toFixed(0)} MiB |`);
  if (troveRestore) rows.push(`| | Trove: \`openssl enc -d \\| gunzip \\| tar x\` | ${troveRestore.seconds.toFixed(2)} s | ${rate(troveRestore)} | | ${troveRestore.maxRssMiB.toFixed(0)} MiB |`);
  notes.push(
    `- ${gib} GiB: backup at ${ratio(ours, tarZstd)}× the throughput of \`tar | zstd -1 -T0\` (target ≥ 0.9)${trove ? `, ${ratio(ours, trove)}× Trove's pipeline` : ''}; restore at ${ratio(ourRestore, zstdRestore)}× \`zstd -d | tar x\` (target ≥ 0.9), ${ratio(ourRestore, zstdRestoreSync)}× the same followed by \`sync -f\`; peak RSS ${ours.maxRssMiB.toFixed(0)} MiB backup, ${ourRestore.maxRssMiB.toFixed(0)} MiB restore (target ≤ 150). Runs (s): backup ${ours.all.join(', ')}; restore ${ourRestore.all.join(', ')}.`,
  );
}

await writeSection(
  'backup',
  `## Full backup and restore (issue 2)

Measured ${new Date().toISOString().slice(0, 10)} on ${machine()}.
Command: \`npm run bench -- --sizes ${values.sizes} --runs ${runs}\` (bench/backup.ts). Data: the real CouchDB 3.5 benchmark
data directory from the fixtures plus copies of its \`.couch\` shards under new database names; page cache warm for every
contender, \`sync\` before every run; repository and archives on the same local disk. Times are medians of ${runs} runs; RSS is the peak of the
largest process (GNU time).

| data | what | time | throughput | stored | peak RSS |
|---|---|---|---|---|---|
${rows.join('\n')}

${notes.join('\n')}
`,
);
console.error('wrote docs/benchmarks.md');
