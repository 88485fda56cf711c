// One CLI (issue 23, items 4, 5 and 7): the `couchtrove` executable as a user types it against a real
// server (real agent; real CouchDB with COUCHDB_HOME, else the development engine), one instance for all
// cases. The instance as the argument of every command, the same flag for the same thing, names with
// spaces, user update, schedule show/pause/resume, the archive's state, log tail --follow, newest backups
// first, nested objects as lines, snake_case answers, messages with names, and shell completion of names
// from the API in bash, zsh and fish; `openstack database configuration set NAME` (the real client).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, runCli } from '../support/cli.js';
import { basicAuth, sandbox, startServer, within, type J, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';

const { root, stateDir, track } = sandbox('couchtrove-one-cli-');
let server: RealServer;
let inst: { id: string; couchdb_url: string };
const env = (): NodeJS.ProcessEnv => ({ COUCHTROVE_API_URL: server.url, COUCHTROVE_USER_PASSWORD: undefined });

/** Runs `couchtrove ARGS`; exit 0 expected unless `code` says otherwise. */
async function ct(args: string[], code = 0): Promise<string> {
  const r = await runCli(args, env());
  assert.equal(r.code, code, `couchtrove ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return code === 0 ? r.stdout : r.stderr;
}
const ctJson = async <T = J>(...args: string[]): Promise<T> => JSON.parse(await ct([...args, '--json'])) as T;

/** Every key of a JSON answer, all levels down. */
const keysOf = (x: unknown): string[] =>
  Array.isArray(x) ? x.flatMap(keysOf) : typeof x === 'object' && x !== null ? Object.entries(x).flatMap(([k, v]) => [k, ...keysOf(v)]) : [];

before(async () => {
  server = track(await startServer(stateDir));
  const out = await ct(['instance', 'create', 'db1', '--flavor', '1', '--size', '1', '--databases', 'orders,logs', '--users', 'ann:Ann-pass-1:orders', '--wait', '--json']);
  inst = (JSON.parse(out) as { instance: { id: string; couchdb_url: string } }).instance;
});

test('the instance as the argument, --instance as before, the same flag for the same thing, user update', { timeout: 120_000 }, async () => {
  for (const args of [['database', 'list', 'db1'], ['database', 'list', '--instance', 'db1']]) assert.match(await ct(args), /^NAME\nlogs\norders\n$/);
  assert.match(await ct(['database', 'create', 'db1', '--database', 'extra']), new RegExp(`^database extra created on db1 \\(${inst.id}\\)$`, 'm'));
  assert.match(await ct(['root', 'show', 'db1']), new RegExp(`^root is not enabled on db1 \\(${inst.id}\\)$`, 'm'));
  const before = Date.now();
  assert.match(await ct(['root', 'enable', 'db1']), /^name\s+root$/m);
  const since = /^root is enabled since (\S+) on db1 /.exec(await ct(['root', 'show', inst.id]))?.[1];
  assert.ok(since && Date.parse(since) >= before - 1000 && Date.parse(since) <= Date.now(), String(since));
  // A new root password keeps the time root was enabled.
  await ct(['root', 'enable', 'db1']);
  assert.equal((await ctJson('root', 'show', 'db1')).root_enabled_at, since);
  assert.match(await ct(['root', 'disable', 'db1']), /^root is disabled on db1 /);

  // grant-access and revoke-access both take --databases (a list); --database, revoke's old flag, still works.
  assert.match(await ct(['user', 'grant-access', 'db1', '--user', 'ann', '--databases', 'logs,extra']), /^user ann is member of logs, extra on db1 /);
  assert.match(await ct(['user', 'revoke-access', 'db1', '--user', 'ann', '--databases', 'logs,extra']), /^user ann no longer uses logs, extra on db1 /);
  assert.match(await ct(['user', 'revoke-access', 'db1', '--user', 'ann', '--database', 'orders']), /no longer uses orders/);
  assert.match(await ct(['user', 'grant-access', 'db1', '--user', 'ann', '--database', 'orders']), /is member of orders/);
  assert.match(await ct(['user', 'show-access', 'db1', '--user', 'ann']), /^NAME\s+ROLE\norders\s+member\n$/);
  assert.match(await ct(['user', 'revoke-access', 'db1', '--user', 'ann', '--database', 'orders', '--databases', 'logs'], 2), /--database is --databases: give it once/);

  // user update changes the password in CouchDB: the new one logs in, the old one no longer does.
  const r = await runCli(['user', 'update', 'db1', '--user', 'ann'], { ...env(), COUCHTROVE_USER_PASSWORD: 'Ann-pass-2' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^the password of user ann on db1 \(\S+\) is changed$/m);
  const as = async (pw: string): Promise<number> => (await fetch(`${inst.couchdb_url}/orders`, { headers: { authorization: basicAuth('ann', pw) } })).status;
  assert.equal(await within('the new password logs in', 30_000, async () => ((await as('Ann-pass-2')) === 200 ? true : null)), true);
  assert.equal(await as('Ann-pass-1'), 401);
});

test('names with spaces, newest backups first, human sizes, nested objects as lines, snake_case, messages with names', { timeout: 180_000 }, async () => {
  const first = (await ctJson<{ backup: { id: string } }>('backup', 'create', 'db1', '--name', 'minutely 2026-12-07T04:04Z', '--wait')).backup;
  const second = (await ctJson<{ backup: { id: string } }>('backup', 'create', 'db1', '--name', 'second', '--wait')).backup;
  assert.match(await ct(['backup', 'show', 'minutely 2026-12-07T04:04Z']), new RegExp(`^id\\s+${first.id}$`, 'm'));
  // Sizes in units people read; the bytes stay in --json.
  assert.match(await ct(['backup', 'show', 'second']), /^size\s+\d+(\.\d)? (B|KiB|MiB)$/m);
  assert.match(await ct(['instance', 'list']), /db1\s+ACTIVE\s+tiny \(1\)\s+1 GB\s/);

  // --limit N: the newest N, and the marker continues to older ones.
  const top = await runCli(['backup', 'list', 'db1', '--limit', '1'], env());
  assert.equal(top.code, 0, top.stderr);
  assert.deepEqual(top.stdout.trim().split('\n').slice(1).map((l) => l.split(/\s+/)[0]), [second.id]);
  assert.equal(top.stderr, `more exist: use --marker ${second.id}\n`);
  assert.match(await ct(['backup', 'list', 'db1', '--limit', '1', '--marker', second.id]), new RegExp(`^${first.id}\\s+minutely 2026-12-07T04:04Z\\s`, 'm'));

  // One database back from the named backup: the answer's keys are snake_case, all levels down.
  const restored = await ctJson<{ restore: J }>('database', 'restore', 'db1', '--database', 'orders', '--backup', 'minutely 2026-12-07T04:04Z', '--as', 'orders_then');
  assert.equal(restored.restore.as, 'orders_then');
  assert.equal(typeof restored.restore.doc_count, 'number');
  for (const k of keysOf(restored)) assert.match(k, /^[a-z0-9_]+$/, `snake_case key: ${k}`);
  assert.match(await ct(['database', 'delete', 'db1', '--database', 'orders_then']), /^database orders_then deleted from db1 /);

  // The archive: its state alone, then on; instance show prints it as lines (archive.window.from), not JSON.
  assert.match(await ct(['instance', 'archive', 'db1']), /^enabled\s+false$/m);
  const on = await ctJson<{ archive: J }>('instance', 'archive', 'db1', '--on', '--interval', '1');
  assert.equal(on.archive.enabled, true);
  assert.equal(on.archive.interval, 1);
  for (const k of keysOf(on)) assert.match(k, /^[a-z0-9_]+$/, `snake_case key: ${k}`);
  const state = await within('an archive restore point', 60_000, async () => {
    const s = await ctJson<{ archive: J }>('instance', 'archive', 'db1');
    return s.archive.restore_point ? s.archive : null;
  });
  for (const k of keysOf(state)) assert.match(k, /^[a-z0-9_]+$/, `snake_case key: ${k}`);
  const shown = await ct(['instance', 'show', 'db1']);
  assert.match(shown, /^archive\.enabled\s+true$/m);
  assert.match(shown, /^archive\.window\.to\s+\d{4}-\d\d-\d\dT/m);
  assert.doesNotMatch(shown, /[{[]"/, 'no raw JSON in show');
  await ct(['instance', 'archive', 'db1', '--off']);

  assert.match(await ct(['backup', 'delete', 'minutely 2026-12-07T04:04Z', '--wait']), new RegExp(`^backup minutely 2026-12-07T04:04Z \\(${first.id}\\) deleted$`, 'm'));
  assert.match(await ct(['backup', 'delete', second.id]), new RegExp(`^backup second \\(${second.id}\\) is being deleted$`, 'm'));
});

test('schedule list|show|pause|resume|delete with the instance as the argument and the schedule by name', { timeout: 60_000 }, async () => {
  await ct(['schedule', 'create', 'db1', '--name', 'nightly', '--pattern', '0 3 * * *']);
  // incremental, verify and paused all false; the next run is a time.
  assert.match(await ct(['schedule', 'list', 'db1']), /nightly\s+0 3 \* \* \*\s+false\s+false\s+false\s+\d{4}-/);
  assert.match(await ct(['schedule', 'show', 'db1', '--schedule', 'nightly']), /^next_run\s+\d{4}-\d\d-\d\dT03:00:00/m);
  assert.match(await ct(['schedule', 'pause', 'db1', '--schedule', 'nightly']), /^schedule nightly \(\S+\) is paused$/m);
  const paused = (await ctJson<{ schedule: J }>('schedule', 'show', 'db1', '--schedule', 'nightly')).schedule;
  assert.equal(paused.paused, true);
  assert.equal(paused.next_run, null);
  assert.match(await ct(['schedule', 'resume', 'db1', '--schedule', 'nightly']), /^schedule nightly \(\S+\) is resumed: next run \d{4}-\d\d-\d\dT03:00:00/);
  assert.equal((await ctJson<{ schedule: J }>('schedule', 'show', 'db1', '--schedule', 'nightly')).schedule.paused, false);
});

test('log tail --follow prints the lines CouchDB adds until it is stopped', { timeout: 90_000 }, async () => {
  const child = spawn(process.execPath, [BIN, 'log', 'tail', 'db1', '--follow', '--lines', '2'], { env: { ...process.env, COUCHTROVE_API_URL: server.url }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await within('the first lines', 30_000, () => (out.length > 0 ? true : null));
    // A request for a database that does not exist: CouchDB logs it (a 404 with the path).
    const marker = `no_such_db_${Date.now()}`;
    await within(`the request for ${marker} in the followed log`, 45_000, async () => {
      await fetch(`${inst.couchdb_url}/${marker}`);
      return out.includes(marker) ? true : null;
    });
    const lines = out.split('\n').filter((l) => l !== '');
    assert.equal(new Set(lines).size, lines.length, `no line printed twice:\n${out}`);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
});

test('completion of instance, backup, configuration and schedule names from the API: bash, zsh, fish', { timeout: 120_000 }, async (t) => {
  await ct(['configuration', 'create', 'cfg one', '--values', '{"couchdb/max_document_size": 4000000}']);
  await ct(['backup', 'create', 'db1', '--name', 'hourly 2026-12-07T05:00Z', '--wait']);
  await ct(['schedule', 'create', 'db1', '--name', 'weekly', '--pattern', '0 4 * * 0']);
  // The scripts run `couchtrove`: a wrapper on PATH for this checkout's executable.
  const bin = path.join(root, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'couchtrove'), `#!/bin/sh\nexec '${process.execPath}' '${BIN}' "$@"\n`, { mode: 0o755 });
  const shellEnv = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, COUCHTROVE_API_URL: server.url, HOME: root };
  const script = async (shell: string): Promise<string> => {
    const file = path.join(root, `completion.${shell}`);
    fs.writeFileSync(file, await ct(['completion', shell]));
    return file;
  };
  const cases: Array<[string[], string[]]> = [
    [['couchtrove', 'instance', 'show', ''], ['db1']],
    [['couchtrove', 'database', 'list', 'd'], ['db1']],
    [['couchtrove', 'backup', 'create', '--instance', ''], ['db1']],
    [['couchtrove', 'backup', 'delete', 'hou'], ['hourly 2026-12-07T05:00Z']],
    [['couchtrove', 'configuration', 'attach', 'db1', '--configuration', 'cfg'], ['cfg one']],
    [['couchtrove', 'schedule', 'pause', 'db1', '--schedule', ''], ['nightly', 'weekly']],
    [['couchtrove', 'schedule', 'pause', '--instance', 'db1', '--schedule', 'w'], ['weekly']],
    // A value that names nothing of the API is not completed with names; options still are.
    [['couchtrove', 'backup', 'create', 'db1', '--name', ''], []],
  ];

  const bash = await script('bash');
  for (const [words, want] of cases) {
    const arr = words.map((w) => `'${w}'`).join(' ');
    const got = execFileSync('bash', ['-c', `source '${bash}'; COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _couchtrove; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8', env: shellEnv }).split('\n').filter((l) => l !== '');
    // bash inserts the words as typed: a space escaped.
    assert.deepEqual(got, want.map((w) => w.replace(/ /g, '\\ ')), `bash: ${words.join(' ')}`);
  }

  for (const shell of ['zsh', 'fish']) {
    const exe = ['/usr/bin', '/bin'].map((d) => path.join(d, shell)).find((p) => fs.existsSync(p));
    if (!exe) {
      t.diagnostic(`${shell} is not installed: its completion of names is not run`);
      console.log(`one-cli.test: ${shell} is not installed, its completion of names was not run`);
      continue;
    }
    const file = await script(shell);
    // A few of the cases: the same logic as bash's, each name lookup a process start.
    for (const [words, want] of [cases[0]!, cases[3]!, cases[5]!, cases[7]!]) {
      const quoted = words.map((w) => `'${w}'`).join(' ');
      const got: string = shell === 'zsh'
        // zsh's compadd replaced by a printer of what would be offered.
        ? execFileSync(exe, ['-f', '-c', `compdef() { :; }; source '${file}'; compadd() { shift; print -l -- "\${(@P)1}"; }; _describe() { :; }; words=(${quoted}); CURRENT=${words.length}; _couchtrove; true`], { encoding: 'utf8', env: shellEnv })
        : execFileSync(exe, ['--no-config', '-c', `source '${file}'; complete -C ${JSON.stringify(words.join(' ').replace(/ $/, ' '))}`], { encoding: 'utf8', env: shellEnv });
      const offered = got.split('\n').filter((l) => l !== '').map((l) => l.split('\t')[0]!);
      const matching = shell === 'zsh' ? offered.filter((o) => o.startsWith(words[words.length - 1]!)) : offered;
      assert.deepEqual(matching.filter((o) => !o.startsWith('-')), want, `${shell}: ${words.join(' ')}`);
    }
  }
});

test('openstack database configuration set NAME: a configuration group by its name (the real client)', { skip: clientsSkip, timeout: clientBudget(2, 60_000) }, async () => {
  await ct(['configuration', 'create', 'cfg1', '--values', '{"couchdb/max_document_size": 4000000}']);
  const { os } = troveClients(path.join(root, 'client-home'), () => server);
  await os('configuration', 'set', 'cfg1', '{"couchdb/max_document_size": 5000000}');
  assert.deepEqual((await ctJson<{ configuration: J }>('configuration', 'show', 'cfg1')).configuration.values, { 'couchdb/max_document_size': 5_000_000 });
  const c = (await ctJson<{ configuration: J }>('configuration', 'show', 'cfg1')).configuration;
  assert.match(await ct(['configuration', 'attach', 'db1', '--configuration', 'cfg1']), new RegExp(`^configuration cfg1 \\(${String(c.id)}\\) is being attached to db1 \\(${inst.id}\\)$`, 'm'));
});
