// Backup and restore throughput and memory of `couchtrove agent backup|restore` against the pipelines
// Trove used and plain tar+zstd, on the same data in one run (issue 2). Not a test: it writes
// docs/benchmarks.md. Usage: npm run bench -- [--sizes 1,4] [--runs 3] [--warmup 1] [--work DIR]
// With --one-file: a data directory that is one file of each size (the benchmark shards concatenated),
// against the same pipelines made durable (`sync -f` after each), in a section of its own (issue 24).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, BIN, buildDatadir, buildOneFile, machine, median, ROOT, timed, writeSection, type Timed } from './lib.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '1,4' }, runs: { type: 'string', default: '3' }, warmup: { type: 'string', default: '1' }, work: { type: 'string', default: path.join(ROOT, 'bench/work') }, 'one-file': { type: 'boolean', default: false } } });
const GiB = 2 ** 30;
const runs = Number(values.runs);
const warmups = Number(values.warmup);
const work = path.resolve(values.work!);
const rows: string[] = [];
const notes: string[] = [];
/** Peak RSS (MiB) of our backup and restore, by size in GiB. */
const peaks = new Map<number, { backup: number; restore: number }>();

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

/** Where a size's archives, repository and restores go; cleanRestore empties the restore target. */
async function places(): Promise<{ out: string; repo: string; restoreDir: string; cleanRestore: () => Promise<void> }> {
  const out = path.join(work, 'out');
  const restoreDir = path.join(work, 'restored');
  await fs.mkdir(out, { recursive: true });
  const cleanRestore = async () => {
    await fs.rm(restoreDir, { recursive: true, force: true });
    await fs.mkdir(restoreDir, { recursive: true });
  };
  return { out, repo: path.join(work, 'repo'), restoreDir, cleanRestore };
}

await fs.mkdir(work, { recursive: true });
const key = await benchKey(path.join(work, 'bench.key'));
const pass = 'trove-style-benchmark-passphrase';
const sizes = values.sizes!.split(',').map(Number);
if (values['one-file']) {
  await oneFile();
  process.exit(0);
}

for (const gib of sizes) {
  const data = path.join(work, `datadir-${gib}g`);
  const bytes = await buildDatadir(data, gib * GiB);
  const mb = bytes / 1e6;
  const { out, repo, restoreDir, cleanRestore } = await places();
  console.error(`data directory: ${data}, ${bytes} bytes`);

  const withTrove = gib <= 1;
  const summaryOf = async () => JSON.parse(await fs.readFile(path.join(out, 'summary.json'), 'utf8')) as { id: string; size: number };
  let backupId = '';
  const L = {
    ours: 'couchtrove backup (zstd-1 + AES-256-GCM + SHA-256)',
    tarZstd: 'tar cf - | zstd -1 -T0',
    tarZstdSync: 'tar cf - | zstd -1 -T0; sync -f',
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
      // Our backup ends with its data object flushed (fdatasync); this line is the pipeline made as durable.
      { label: L.tarZstdSync, cmd: () => `tar cf - -C ${data} . | zstd -1 -T0 -q > ${out}/data.tar.zst && sync -f ${out}/data.tar.zst`, setup: () => fs.rm(path.join(out, 'data.tar.zst'), { force: true }) },
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
  const [ours, tarZstd, tarZstdSync, ourRestore, zstdRestore, zstdRestoreSync] = [L.ours, L.tarZstd, L.tarZstdSync, L.ourRestore, L.zstdRestore, L.zstdRestoreSync].map(get) as [Result, Result, Result, Result, Result, Result];
  peaks.set(gib, { backup: ours.maxRssMiB, restore: ourRestore.maxRssMiB });
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
  rows.push(`| | the same then \`sync -f\` (durable, as ours) | ${tarZstdSync.seconds.toFixed(2)} s | ${rate(tarZstdSync)} | | ${tarZstdSync.maxRssMiB.toFixed(0)} MiB |`);
  if (trove) rows.push(`| | Trove: \`tar cpf - \\| gzip \\| openssl enc -aes-256-cbc\` | ${trove.seconds.toFixed(2)} s | ${rate(trove)} | ${(troveSize / 1e6).toFixed(0)} MB | ${trove.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | couchtrove restore (decrypt, decompress, SHA-256 check, fdatasync) | ${ourRestore.seconds.toFixed(2)} s | ${rate(ourRestore)} | | ${ourRestore.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`zstd -d \\| tar x\` | ${zstdRestore.seconds.toFixed(2)} s | ${rate(zstdRestore)} | | ${zstdRestore.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`zstd -d \\| tar x\` then \`sync -f\` (durable, as ours) | ${zstdRestoreSync.seconds.toFixed(2)} s | ${rate(zstdRestoreSync)} | | ${zstdRestoreSync.maxRssMiB.toFixed(0)} MiB |`);
  if (troveRestore) rows.push(`| | Trove: \`openssl enc -d \\| gunzip \\| tar x\` | ${troveRestore.seconds.toFixed(2)} s | ${rate(troveRestore)} | | ${troveRestore.maxRssMiB.toFixed(0)} MiB |`);
  notes.push(
    `- ${gib} GiB: backup at ${ratio(ours, tarZstdSync)}× the throughput of \`tar | zstd -1 -T0; sync -f\` (durable; issue 24 target ≥ 1.1), ${ratio(ours, tarZstd)}× without its \`sync -f\` (target ≥ 0.9)${trove ? `, ${ratio(ours, trove)}× Trove's pipeline` : ''}; restore at ${ratio(ourRestore, zstdRestoreSync)}× \`zstd -d | tar x; sync -f\` (durable; issue 24 target ≥ 1.5), ${ratio(ourRestore, zstdRestore)}× without its \`sync -f\` (target ≥ 0.9); stored ${(stored / zstdSize).toFixed(3)}× the size of \`data.tar.zst\`; peak RSS ${ours.maxRssMiB.toFixed(0)} MiB backup, ${ourRestore.maxRssMiB.toFixed(0)} MiB restore (target ≤ 150). Runs (s): backup ${ours.all.join(', ')} against ${tarZstdSync.all.join(', ')} (durable) and ${tarZstd.all.join(', ')}; restore ${ourRestore.all.join(', ')} against ${zstdRestore.all.join(', ')}; warm-up, not counted: backup ${ours.warmups.join(', ')} against ${tarZstd.warmups.join(', ')}, restore ${ourRestore.warmups.join(', ')} against ${zstdRestore.warmups.join(', ')}.`,
  );
}

// Issue 24 target 5: memory does not grow with the data.
const [small, large] = [Math.min(...sizes), Math.max(...sizes)].map((g) => peaks.get(g));
if (small && large && sizes.length > 1) {
  const grow = (a: number, b: number) => `${(((b - a) / a) * 100).toFixed(1)}%`;
  notes.push(`- Peak RSS ${Math.max(...sizes)} GiB against ${Math.min(...sizes)} GiB: backup ${grow(small.backup, large.backup)}, restore ${grow(small.restore, large.restore)} (issue 24 target: within 10%).`);
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

/**
 * One file of `gib` GiB: couchtrove backup and restore against `tar | zstd -1 -T0` and `zstd -d | tar x`,
 * each followed by `sync -f` so that both sides end durable, as ours does (its repository fdatasyncs the
 * data object; its restore every file).
 */
async function oneFile(): Promise<void> {
  const lines: string[] = [];
  const summary: string[] = [];
  for (const gib of sizes) {
    const data = path.join(work, `onefile-${gib}g`);
    const bytes = await buildOneFile(data, path.join(work, `datadir-${gib}g`), gib * GiB);
    const mb = bytes / 1e6;
    const { out, repo, restoreDir, cleanRestore } = await places();
    console.error(`one-file data directory: ${data}, ${bytes} bytes`);
    let backupId = '';
    const L = { ours: 'couchtrove backup', tar: 'tar | zstd; sync -f', ourRestore: 'couchtrove restore', untar: 'zstd -d | tar x; sync -f', untarNoSync: 'zstd -d | tar x' };
    const results = await rounds([
      [
        { label: L.ours, cmd: () => `node ${BIN} agent backup --data-dir ${data} --storage file://${repo} --key-file ${key} --json > ${out}/summary.json`, setup: () => fs.rm(repo, { recursive: true, force: true }) },
        { label: L.tar, cmd: () => `tar cf - -C ${data} . | zstd -1 -T0 -q > ${out}/data.tar.zst && sync -f ${out}/data.tar.zst`, setup: () => fs.rm(path.join(out, 'data.tar.zst'), { force: true }) },
      ],
      [
        {
          label: L.ourRestore,
          cmd: () => `node ${BIN} agent restore --storage file://${repo} --backup ${backupId} --key-file ${key} --data-dir ${restoreDir} --json > /dev/null`,
          setup: async () => {
            backupId = (JSON.parse(await fs.readFile(path.join(out, 'summary.json'), 'utf8')) as { id: string }).id;
            await cleanRestore();
          },
        },
        { label: L.untar, cmd: () => `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir} && sync -f ${restoreDir}`, setup: cleanRestore },
        { label: L.untarNoSync, cmd: () => `zstd -d -q -c ${out}/data.tar.zst | tar xf - -C ${restoreDir}`, setup: cleanRestore },
      ],
    ]);
    // Whichever restore ran last, its file is the original, byte for byte.
    execFileSync('cmp', [path.join(data, 'big.couch'), path.join(restoreDir, 'big.couch')]);
    await cleanRestore();
    const [ours, tar, ourRestore, untar, untarNoSync] = [L.ours, L.tar, L.ourRestore, L.untar, L.untarNoSync].map((l) => results.get(l)!) as [Result, Result, Result, Result, Result];
    const rate = (t: Timed) => `${(mb / t.seconds).toFixed(0)} MB/s`;
    const ratio = (ours: Timed, theirs: Timed) => (theirs.seconds / ours.seconds).toFixed(2);
    const row = (what: string, t: Result, first = false) => `| ${first ? `${gib} GiB, one file (${mb.toFixed(0)} MB)` : ''} | ${what} | ${t.seconds.toFixed(2)} s | ${rate(t)} | ${t.all.join(', ')} | ${t.maxRssMiB.toFixed(0)} MiB |`;
    lines.push(
      row('couchtrove backup, zstd-1 + AES-256-GCM + SHA-256 (data object fdatasynced)', ours, true),
      row('`tar cf - DIR \\| zstd -1 -T0 > out` then `sync -f out`', tar),
      row('couchtrove restore (decrypt, decompress, SHA-256 check, fdatasync)', ourRestore),
      row('`zstd -d \\| tar x` then `sync -f`', untar),
      row('`zstd -d \\| tar x` (not durable, for reference)', untarNoSync),
    );
    summary.push(
      `- ${gib} GiB in one file: **backup at ${ratio(ours, tar)}×** the throughput of \`tar | zstd -1 -T0; sync -f\` (target ≥ 1.0), **restore at ${ratio(ourRestore, untar)}×** \`zstd -d | tar x; sync -f\` (target ≥ 1.0; ${ratio(ourRestore, untarNoSync)}× without its \`sync -f\`); peak RSS ${ours.maxRssMiB.toFixed(0)} MiB backup, ${ourRestore.maxRssMiB.toFixed(0)} MiB restore (target ≤ 150). Warm-up, not counted: backup ${ours.warmups.join(', ')} against ${tar.warmups.join(', ')}, restore ${ourRestore.warmups.join(', ')} against ${untar.warmups.join(', ')}.`,
    );
  }
  const load = (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
  await writeSection(
    'backup-one-file',
    `## One huge file (issue 24)

Measured ${new Date().toISOString().slice(0, 10)} on ${machine()}; load average at the end ${load}.
Command: \`npm run build && node dist/bench/backup.js --one-file --sizes ${values.sizes} --runs ${runs} --warmup ${warmups}\` (bench/backup.ts).
Data: a data directory holding one file, \`big.couch\`: the \`.couch\` shards of the benchmark data directory above
concatenated until it is at least the size given. Both sides end durable: ours fdatasyncs the data object (backup) and every
file (restore), the pipelines are followed by \`sync -f\`. Page cache warm, \`sync\` before every run; contenders take turns
round by round after ${warmups} warm-up round${warmups === 1 ? '' : 's'}; times are medians of ${runs} runs; RSS is the peak of the largest process (GNU time).

| data | what | time | throughput | runs (s) | peak RSS |
|---|---|---|---|---|---|
${lines.join('\n')}

${summary.join('\n')}
`,
  );
  console.error('wrote docs/benchmarks.md');
}
