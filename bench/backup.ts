// Backup and restore throughput and memory of `couchtrove agent backup|restore` against the pipelines
// Trove used and plain tar+zstd, on the same data in one run (issue 2). Not a test: it writes
// docs/benchmarks.md. Usage: npm run bench -- [--sizes 1,4] [--runs 3] [--warmup 1] [--work DIR]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, BIN, buildDatadir, machine, median, ROOT, timed, writeSection, type Timed } from './lib.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '1,4' }, runs: { type: 'string', default: '3' }, warmup: { type: 'string', default: '1' }, work: { type: 'string', default: path.join(ROOT, 'bench/work') } } });
const GiB = 2 ** 30;
const runs = Number(values.runs);
const warmups = Number(values.warmup);
const work = path.resolve(values.work!);
const rows: string[] = [];
const notes: string[] = [];

interface Contender {
  label: string;
  cmd: () => string;
  setup?: () => Promise<void>;
}
type Result = Timed & { all: number[]; warmups: number[] };

/**
 * Runs each group's contenders once per round, in turn (the order reversed every other round), so that
 * a machine that drifts during the run weighs on all of them alike. Groups run in order within a round:
 * the backups, then the restores of what they wrote. The first `warmups` rounds are printed, not counted:
 * the first run after a build or after the data directory is made was 20-40% slower, for tar as for us.
 */
async function rounds(groups: Contender[][]): Promise<Map<string, Result>> {
  const times = new Map<string, Timed[]>();
  /** Warm-up runs: reported, and their memory counts even though their time does not. */
  const warm = new Map<string, Timed[]>();
  for (let round = 0; round < warmups + runs; round++) {
    for (const group of groups) {
      for (const c of round % 2 ? [...group].reverse() : group) {
        await c.setup?.();
        // Nothing of the previous run (its deletions, the other contender's unsynced writes) is left for
        // this one to write back: every contender starts from a clean page cache state.
        execFileSync('sync');
        const t = timed(c.cmd());
        if (round < warmups) {
          console.error(`${c.label}: warm-up ${t.seconds} s (time not counted)`);
          warm.set(c.label, [...(warm.get(c.label) ?? []), t]);
        } else times.set(c.label, [...(times.get(c.label) ?? []), t]);
      }
    }
  }
  const results = new Map<string, Result>();
  for (const [label, all] of times) {
    const secs = all.map((t) => t.seconds);
    const warmups = warm.get(label) ?? [];
    const maxRssMiB = Math.max(...[...warmups, ...all].map((t) => t.maxRssMiB));
    console.error(`${label}: ${secs.join(' s, ')} s; peak RSS ${maxRssMiB.toFixed(0)} MiB`);
    results.set(label, { seconds: median(secs), maxRssMiB, all: secs, warmups: warmups.map((t) => t.seconds) });
  }
  return results;
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
  const cleanRestore = async () => {
    await fs.rm(restoreDir, { recursive: true, force: true });
    await fs.mkdir(restoreDir, { recursive: true });
  };
  await fs.mkdir(out, { recursive: true });
  console.error(`data directory: ${data}, ${bytes} bytes`);

  const withTrove = gib <= 1;
  const summaryOf = async () => JSON.parse(await fs.readFile(path.join(out, 'summary.json'), 'utf8')) as { id: string; size: number };
  let backupId = '';
  const L = {
    ours: 'couchtrove backup (zstd-1 + AES-256-GCM + SHA-256)',
    tarZstd: 'tar cf - | zstd -1 -T0',
    trove: "Trove's tar | gzip | openssl",
    ourRestore: 'couchtrove restore',
    zstdRestore: 'zstd -d | tar x',
    zstdRestoreSync: 'zstd -d | tar x; sync -f',
    troveRestore: "Trove's openssl -d | gunzip | tar x",
  };
  const results = await rounds([
    [
      { label: L.ours, cmd: () => `node ${BIN} agent backup --data-dir ${data} --storage file://${repo} --key-file ${key} --json > ${out}/summary.json`, setup: () => fs.rm(repo, { recursive: true, force: true }) },
      { label: L.tarZstd, cmd: () => `tar cf - -C ${data} . | zstd -1 -T0 -q > ${out}/data.tar.zst`, setup: () => fs.rm(path.join(out, 'data.tar.zst'), { force: true }) },
      ...(withTrove ? [{ label: L.trove, cmd: () => `tar cpf - -C ${data} . | gzip | openssl enc -aes-256-cbc -salt -pass pass:${pass} > ${out}/trove.enc` }] : []),
    ],
    [
      {
        label: L.ourRestore,
        cmd: () => `node ${BIN} agent restore --storage file://${repo} --backup ${backupId} --key-file ${key} --data-dir ${restoreDir} --json > /dev/null`,
        setup: async () => {
          backupId = (await summaryOf()).id;
          await cleanRestore();
        },
      },
      { label: L.zstdRestore, cmd: () => `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir}`, setup: cleanRestore },
      // Our restore flushes every file to disk before it reports success; tar does not. This line shows what durability costs.
      { label: L.zstdRestoreSync, cmd: () => `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir} && sync -f ${restoreDir}`, setup: cleanRestore },
      ...(withTrove ? [{ label: L.troveRestore, cmd: () => `openssl enc -d -aes-256-cbc -pass pass:${pass} < ${out}/trove.enc | gunzip | tar xf - -C ${restoreDir}`, setup: cleanRestore }] : []),
    ],
  ]);
  const get = (label: string) => results.get(label)!;
  const [ours, tarZstd, ourRestore, zstdRestore, zstdRestoreSync] = [L.ours, L.tarZstd, L.ourRestore, L.zstdRestore, L.zstdRestoreSync].map(get) as [Result, Result, Result, Result, Result];
  const trove = withTrove ? get(L.trove) : undefined;
  const troveRestore = withTrove ? get(L.troveRestore) : undefined;
  const stored = (await summaryOf()).size;
  const zstdSize = (await fs.stat(path.join(out, 'data.tar.zst'))).size;
  const troveSize = withTrove ? (await fs.stat(path.join(out, 'trove.enc'))).size : 0;
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
    `- ${gib} GiB: backup at ${ratio(ours, tarZstd)}× the throughput of \`tar | zstd -1 -T0\` (target ≥ 0.9)${trove ? `, ${ratio(ours, trove)}× Trove's pipeline` : ''}; restore at ${ratio(ourRestore, zstdRestore)}× \`zstd -d | tar x\` (target ≥ 0.9), ${ratio(ourRestore, zstdRestoreSync)}× the same followed by \`sync -f\`; peak RSS ${ours.maxRssMiB.toFixed(0)} MiB backup, ${ourRestore.maxRssMiB.toFixed(0)} MiB restore (target ≤ 150). Runs (s): backup ${ours.all.join(', ')} against ${tarZstd.all.join(', ')}; restore ${ourRestore.all.join(', ')} against ${zstdRestore.all.join(', ')}; warm-up, not counted: backup ${ours.warmups.join(', ')} against ${tarZstd.warmups.join(', ')}, restore ${ourRestore.warmups.join(', ')} against ${zstdRestore.warmups.join(', ')}.`,
  );
}

await writeSection(
  'backup',
  `## Full backup and restore (issue 2)

Measured ${new Date().toISOString().slice(0, 10)} on ${machine()}.
Command: \`npm run bench -- --sizes ${values.sizes} --runs ${runs} --warmup ${warmups}\` (bench/backup.ts). Data: the real CouchDB 3.5 benchmark
data directory from the fixtures plus copies of its \`.couch\` shards under new database names; page cache warm for every
contender, \`sync\` before every run; repository and archives on the same local disk. The contenders take turns, round by round
(each round's order the reverse of the last), so that drift of the machine during the run weighs on all alike, after ${warmups}
warm-up round${warmups === 1 ? ' that is' : 's that are'} not timed. Times are medians of ${runs} runs; RSS is the peak of the largest process (GNU time).

| data | what | time | throughput | stored | peak RSS |
|---|---|---|---|---|---|
${rows.join('\n')}

${notes.join('\n')}
`,
);
console.error('wrote docs/benchmarks.md');
