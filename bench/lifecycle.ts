// How long an operator waits: `instance create` to ACTIVE and `backup create` to COMPLETED, through the
// real API of a real server, on Apache CouchDB when COUCHDB_HOME is set (else the development engine).
// Not a test: it writes its section of docs/benchmarks.md. Usage:
//   COUCHDB_HOME=/opt/couchdb npm run build && node dist/bench/lifecycle.js [--runs 5] [--docs 10000]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { BIN, call, machine, median, serverUrl, writeSection, type J } from './lib.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, docs: { type: 'string', default: '10000' } } });
const runs = Number(values.runs);
const docs = Number(values.docs);
let engine = process.env.COUCHDB_HOME ? `Apache CouchDB at ${process.env.COUCHDB_HOME}` : 'the development engine (no COUCHDB_HOME)';


/** Polls until the resource reaches one of the states; returns the seconds since `since`. */
async function until(base: string, kind: 'instances' | 'backups', id: string, want: string, since: number): Promise<number> {
  const single = kind === 'instances' ? 'instance' : 'backup';
  for (;;) {
    const r = await call(base, 'GET', `/${kind}/${id}`);
    const status = (r.json[single] as J | undefined)?.status;
    if (status === want) return (performance.now() - since) / 1000;
    if (status === 'ERROR' || status === 'FAILED') throw new Error(`${single} ${id} is ${String(status)}: ${JSON.stringify(r.json)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-bench-lifecycle-'));
  fs.chmodSync(root, 0o711);
  let base = '';
  const proc = spawn(process.execPath, [BIN, 'server', '--port', '0', '--state-dir', path.join(root, 'state')], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await serverUrl(proc);
    base = `${url}/v1.0/local`;
    const creates: number[] = [];
    const ids: string[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = await call(base, 'POST', '/instances', { instance: { name: `bench-${i}`, flavorRef: '2', volume: { size: 2 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 'bench-pw-1', databases: [{ name: 'orders' }] }] } });
      const id = (r.json.instance as J).id as string;
      creates.push(await until(base, 'instances', id, 'ACTIVE', t0));
      ids.push(id);
      console.error(`create ${i + 1}: ${creates.at(-1)!.toFixed(2)} s`);
    }
    // Backups of the first instance, holding `docs` documents of about 1 KB.
    const inst = (await call(base, 'GET', `/instances/${ids[0]}`)).json.instance as J;
    const couch = inst.couchdb_url as string;
    const auth = `Basic ${Buffer.from('alice:bench-pw-1').toString('base64')}`;
    engine += ` (version ${((await (await fetch(`${couch}/`)).json()) as J).version as string})`;
    for (let done = 0; done < docs; done += 1000) {
      const batch = Array.from({ length: Math.min(1000, docs - done) }, (_, k) => ({ _id: `doc-${done + k}`, body: 'x'.repeat(1000) }));
      const w = await fetch(`${couch}/orders/_bulk_docs`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs: batch }) });
      if (w.status !== 201) throw new Error(`_bulk_docs answered ${w.status}`);
    }
    const backups: number[] = [];
    for (let i = 0; i < runs; i++) {
      // The instance is given back a moment after its backup is COMPLETED: the next one waits for that.
      await until(base, 'instances', ids[0]!, 'ACTIVE', performance.now());
      const t0 = performance.now();
      const r = await call(base, 'POST', '/backups', { backup: { name: `bench-${i}`, instance: ids[0] } });
      if (r.status !== 202) throw new Error(`backup create answered ${r.status}: ${JSON.stringify(r.json)}`);
      const id = (r.json.backup as J).id as string;
      backups.push(await until(base, 'backups', id, 'COMPLETED', t0));
      console.error(`backup ${i + 1}: ${backups.at(-1)!.toFixed(2)} s`);
    }
    const fmt = (xs: number[]) => `${median(xs).toFixed(2)} s (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`;
    await writeSection(
      'lifecycle',
      [
        '## Time to ACTIVE and to COMPLETED',
        '',
        `${machine()}, ${new Date().toISOString().slice(0, 10)}. Engine: ${engine}.`,
        `Command: \`npm run build && ${process.env.COUCHDB_HOME ? `COUCHDB_HOME=${process.env.COUCHDB_HOME} ` : ''}node dist/bench/lifecycle.js --runs ${runs} --docs ${docs}\` (bench/lifecycle.ts), through the`,
        'API of a real server on one machine, instances as local processes, backups to the default encrypted file repository.',
        '',
        '| what | median of the runs |',
        '|---|---|',
        `| \`instance create\` (a database and a user) to ACTIVE | ${fmt(creates)} |`,
        `| \`backup create\` of an instance with ${docs} documents of 1 KB to COMPLETED | ${fmt(backups)} |`,
      ].join('\n'),
    );
    console.log(`create to ACTIVE: ${fmt(creates)}\nbackup to COMPLETED: ${fmt(backups)}`);
  } finally {
    // Instances outlive the server: they are deleted through it, whatever happened above.
    if (base) {
      const all = (((await call(base, 'GET', '/instances').catch(() => null))?.json.instances as J[] | undefined) ?? []);
      for (const inst of all) await call(base, 'DELETE', `/instances/${inst.id as string}`).catch(() => undefined);
      const end = Date.now() + 60_000;
      while (Date.now() < end && ((((await call(base, 'GET', '/instances').catch(() => null))?.json.instances as J[] | undefined) ?? []).length > 0)) await new Promise((res) => setTimeout(res, 250));
    }
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();
