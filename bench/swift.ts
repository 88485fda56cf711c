// Backup to and restore from OpenStack Swift: `couchtrove agent backup|restore --storage swift://...`
// (zstd-1 + AES-256-GCM + SHA-256, streamed; SLO past the segment size) against python-swiftclient with
// `tar cf - DIR | zstd -1 -T0` to a file, then `swift upload --use-slo --segment-size S`, and restore against
// `swift download` + `zstd -d | tar x`. Both against the same private Swift all-in-one on loopback
// (scripts/swift/swift-aio.sh), end to end, with the peak RSS of the largest process (GNU time). With --s3,
// also couchtrove's backup and restore through the same Swift's S3 API (s3api: multipart uploads, ranged GETs).
// Not a test. Usage:
//   node dist/bench/swift.js [DATA_DIR] [--size GIB] [--segment-sizes 1GiB,64MiB] [--runs N] [--work DIR] [--s3] [--write]
// Without DATA_DIR, builds one of --size GiB (default 1) like bench/backup.ts. --write puts a section in
// docs/benchmarks.md.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { benchKey, BIN, buildDatadir, machine, median, ROOT, timed, writeSection, type Timed } from './lib.js';
import { parseSize } from '../src/storage/util.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    size: { type: 'string', default: '1' },
    'segment-sizes': { type: 'string', default: '1GiB,64MiB' },
    runs: { type: 'string', default: '1' },
    work: { type: 'string', default: path.join(ROOT, 'bench/work') },
    write: { type: 'boolean', default: false },
    s3: { type: 'boolean', default: false },
  },
});
const GiB = 2 ** 30;
const runs = Number(values.runs);
const work = path.resolve(values.work!);
await fs.mkdir(work, { recursive: true });

const data = positionals[0] ? path.resolve(positionals[0]) : path.join(work, `datadir-${values.size}g`);
if (!positionals[0]) await buildDatadir(data, Number(values.size) * GiB);
// Bytes of the regular files (find, not a recursive opendir, which misses entries on some Node 20 releases).
const bytes = execFileSync('find', [data, '-type', 'f', '!', '-name', '.bench-size', '-printf', '%s\\n'], { encoding: 'utf8', maxBuffer: 1 << 28 })
  .split('\n').filter(Boolean).reduce((n, l) => n + Number(l), 0);
const mb = bytes / 1e6;

// A private Swift with the default max_file_size (5 GiB), stopped when this process ends.
const swiftDir = path.join(work, `swift-${process.pid}`);
await fs.rm(swiftDir, { recursive: true, force: true });
const script = path.join(ROOT, 'scripts/swift/swift-aio.sh');
execFileSync('bash', [script, 'start', swiftDir, '--owner-pid', String(process.pid)], { stdio: ['ignore', 'ignore', 'inherit'] });
const stopSwift = (): void => {
  try {
    execFileSync('bash', [script, 'stop', swiftDir], { stdio: 'ignore' });
  } catch {
    // the watchdog stops it
  }
};
process.on('exit', stopSwift);
const info = JSON.parse(await fs.readFile(path.join(swiftDir, 'swift.json'), 'utf8')) as { authUrl: string; user: string; key: string; s3Endpoint: string; region: string; accessKeyId: string; secretAccessKey: string };
const swiftEnv = { ST_AUTH: info.authUrl, ST_USER: info.user, ST_KEY: info.key };
const s3Env = { AWS_ENDPOINT_URL: info.s3Endpoint, AWS_REGION: info.region, AWS_ACCESS_KEY_ID: info.accessKeyId, AWS_SECRET_ACCESS_KEY: info.secretAccessKey, COUCHTROVE_S3_FORCE_PATH_STYLE: 'true' };

const key = await benchKey(path.join(work, 'bench-swift.key'));

const archive = path.join(work, 'base.tar.zst');
const downloaded = path.join(work, 'download.tar.zst');
const restored = path.join(work, 'restored-swift');
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function best(label: string, cmd: string, env: NodeJS.ProcessEnv, setup?: () => void): Timed {
  const all: Timed[] = [];
  for (let i = 0; i < runs; i++) {
    setup?.();
    all.push(timed(cmd, env));
  }
  const secs = all.map((t) => t.seconds);
  const t = { seconds: median(secs), maxRssMiB: Math.max(...all.map((x) => x.maxRssMiB)) };
  console.error(`${label}: ${secs.join(' s, ')} s (${(mb / t.seconds).toFixed(0)} MB/s); peak RSS ${t.maxRssMiB.toFixed(0)} MiB`);
  return t;
}

const resetDir = (dir: string) => (): void => {
  execFileSync('rm', ['-rf', dir]);
  execFileSync('mkdir', ['-p', dir]);
};

/** Same files, same bytes: sizes and SHA-256 of every file (the restore must be right to count). */
function sameTree(a: string, b: string): boolean {
  const list = (d: string): string => execFileSync('bash', ['-c', `cd ${q(d)} && find . -type f ! -name .bench-size -print0 | sort -z | xargs -0 sha256sum`], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return list(a) === list(b);
}

// Warm the page cache for every contender alike.
execFileSync('bash', ['-c', `tar cf - -C ${q(data)} . > /dev/null`]);

const rows: string[] = [];
const notes: string[] = [];
for (const segText of values['segment-sizes']!.split(',')) {
  const seg = parseSize(segText, '--segment-sizes');
  const container = `bench-${seg}`;
  const env = { ...swiftEnv, COUCHTROVE_SWIFT_SEGMENT_SIZE: String(seg) };
  const url = `swift://${container}/ours`;
  let lastId = '';

  const ours = best(`couchtrove backup → Swift (segments ${segText})`, `node ${q(BIN)} agent backup --data-dir ${q(data)} --storage ${url} --key-file ${q(key)} --json > ${q(path.join(work, 'last-backup.json'))}`, env);
  lastId = (JSON.parse(await fs.readFile(path.join(work, 'last-backup.json'), 'utf8')) as { id: string; size: number }).id;
  const stored = (JSON.parse(await fs.readFile(path.join(work, 'last-backup.json'), 'utf8')) as { size: number }).size;
  const base = best(`tar | zstd -1 -T0 + swift upload --use-slo (segments ${segText})`,
    `rm -f ${q(archive)} && tar cf - -C ${q(data)} . | zstd -1 -T0 -q -o ${q(archive)} && swift upload --use-slo --segment-size ${seg} --object-name base.tar.zst ${container}-base ${q(archive)} > /dev/null`, env);
  const archiveBytes = (await fs.stat(archive)).size;

  const oursRestore = best(`couchtrove restore ← Swift (segments ${segText})`, `node ${q(BIN)} agent restore --storage ${url} --backup ${lastId} --data-dir ${q(restored)} --key-file ${q(key)} --force --json > /dev/null`, env, resetDir(restored));
  const okOurs = sameTree(data, restored);
  const baseRestore = best(`swift download + zstd -d | tar x (segments ${segText})`,
    `rm -f ${q(downloaded)} && swift download ${container}-base base.tar.zst -o ${q(downloaded)} > /dev/null && zstd -d -q -c ${q(downloaded)} | tar xf - -C ${q(restored)}`, env, resetDir(restored));
  const okBase = sameTree(data, restored);
  if (!okOurs || !okBase) notes.push(`- segments ${segText}: restored tree differs from the source (${okOurs ? '' : 'couchtrove '}${okBase ? '' : 'baseline'})!`);

  rows.push(`| ${segText} | couchtrove backup → Swift (zstd-1 + AES-256-GCM + SHA-256) | ${ours.seconds.toFixed(2)} s | ${(mb / ours.seconds).toFixed(0)} MB/s | ${(stored / 1e6).toFixed(0)} MB | ${ours.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`tar \\| zstd -1 -T0\` to a file + \`swift upload --use-slo\` | ${base.seconds.toFixed(2)} s | ${(mb / base.seconds).toFixed(0)} MB/s | ${(archiveBytes / 1e6).toFixed(0)} MB | ${base.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | couchtrove restore ← Swift | ${oursRestore.seconds.toFixed(2)} s | ${(mb / oursRestore.seconds).toFixed(0)} MB/s | | ${oursRestore.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | \`swift download\` + \`zstd -d \\| tar x\` | ${baseRestore.seconds.toFixed(2)} s | ${(mb / baseRestore.seconds).toFixed(0)} MB/s | | ${baseRestore.maxRssMiB.toFixed(0)} MiB |`);
  notes.push(`- segments ${segText}: backup at ${(base.seconds / ours.seconds).toFixed(2)}× the baseline's throughput (target ≥ 0.8), restore at ${(baseRestore.seconds / oursRestore.seconds).toFixed(2)}×; peak RSS ${ours.maxRssMiB.toFixed(0)} / ${oursRestore.maxRssMiB.toFixed(0)} MiB.`);
}

if (values.s3) {
  const url = 's3://bench-s3/ours';
  const out = path.join(work, 'last-backup.json');
  const ours = best('couchtrove backup → S3', `node ${q(BIN)} agent backup --data-dir ${q(data)} --storage ${url} --key-file ${q(key)} --json > ${q(out)}`, s3Env);
  const { id, size } = JSON.parse(await fs.readFile(out, 'utf8')) as { id: string; size: number };
  const back = best('couchtrove restore ← S3', `node ${q(BIN)} agent restore --storage ${url} --backup ${id} --data-dir ${q(restored)} --key-file ${q(key)} --force --json > /dev/null`, s3Env, resetDir(restored));
  if (!sameTree(data, restored)) notes.push('- S3: restored tree differs from the source!');
  rows.push(`| S3 (s3api) | couchtrove backup → S3 (multipart) | ${ours.seconds.toFixed(2)} s | ${(mb / ours.seconds).toFixed(0)} MB/s | ${(size / 1e6).toFixed(0)} MB | ${ours.maxRssMiB.toFixed(0)} MiB |`);
  rows.push(`| | couchtrove restore ← S3 | ${back.seconds.toFixed(2)} s | ${(mb / back.seconds).toFixed(0)} MB/s | | ${back.maxRssMiB.toFixed(0)} MiB |`);
  notes.push(`- S3 through the same Swift's s3api: peak RSS ${ours.maxRssMiB.toFixed(0)} / ${back.maxRssMiB.toFixed(0)} MiB (backup / restore).`);
}

const section = `## Backup to and restore from OpenStack Swift (issue 3)

Measured ${new Date().toISOString().slice(0, 10)} on ${machine()}; Swift 2.30 all-in-one (Debian packages,
scripts/swift/swift-aio.sh, tempauth, one replica, loopback) on the same 2 cores and disk.
Command: \`node dist/bench/swift.js ${process.argv.slice(2).join(' ')}\` (bench/swift.ts). Data: ${mb.toFixed(0)} MB in \`${path.basename(data)}\`.
Times are medians of ${runs} run(s), end to end (compression, encryption, upload; download, checks, fsync);
RSS is the peak of the largest process (GNU time). Both restores are checked file by file (SHA-256).

| segment size | what | time | throughput | stored | peak RSS |
|---|---|---|---|---|---|
${rows.join('\n')}

${notes.join('\n')}`;
console.log(section);
if (values.write) await writeSection('swift', section);
stopSwift();
