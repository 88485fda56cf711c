// Issue 14, as a user runs the commands: tampered manifests, loose key files, links in a data
// directory, existing configuration files, and the staging directory of a killed restore.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { extractDatadir } from '../support/fixtures.js';
import { BIN, runCli } from '../support/cli.js';
import { smallDatadir } from '../support/small-datadir.js';
import { tempDir } from '../support/tree.js';

/** Sets a manifest's `created` without resealing it, as someone without the key would. */
async function editCreated(repoDir: string, id: string, created: string): Promise<void> {
  const file = path.join(repoDir, 'backups', id, 'manifest.json');
  const m = JSON.parse(await fs.readFile(file, 'utf8')) as { body: { created: string } };
  m.body.created = created;
  await fs.writeFile(file, JSON.stringify(m));
}

describe('couchtrove agent commands and issue 14', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let keyFile: string;
  before(async () => {
    work = await tempDir('cli-trust');
    keyFile = path.join(work.dir, 'backup.key');
    assert.equal((await runCli(['agent', 'keygen', '--out', keyFile])).code, 0);
  });
  after(async () => work.cleanup());

  const backup = async (src: string, repo: string, ...extra: string[]) => {
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', keyFile, '--json', ...extra]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { id: string; parent: string | null };
  };

  test('list, expire and --parent latest pass over a manifest that does not authenticate', async () => {
    const src = await smallDatadir(path.join(work.dir, 'expire-src'));
    const repoDir = path.join(work.dir, 'expire-repo');
    const repo = `file://${repoDir}`;
    const old = await backup(src, repo);
    const good = await backup(src, repo);
    const edited = await backup(src, repo);
    await editCreated(repoDir, edited.id, '2099-01-01T00:00:00.000Z');

    const list = await runCli(['agent', 'list', '--storage', repo, '--key-file', keyFile]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^UNVERIFIED ${edited.id} .*does not authenticate with this key \\(never chosen, counted or deleted by a policy\\)$`, 'm'));
    const json = await runCli(['agent', 'list', '--storage', repo, '--key-file', keyFile, '--json']);
    assert.deepEqual((JSON.parse(json.stdout) as { id: string }[]).map((b) => b.id), [old.id, good.id]);
    assert.match(json.stderr, new RegExp(`unverified backup ${edited.id}`));

    const inc = await backup(src, repo, '--parent', 'latest');
    assert.equal(inc.parent, good.id, '--parent latest is the newest backup that authenticates');

    const exp = await runCli(['agent', 'expire', '--storage', repo, '--key-file', keyFile, '--keep-last', '1']);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stderr, new RegExp(`unverified backup ${edited.id} kept, not counted by the policy`));
    assert.match(exp.stdout, new RegExp(`keep +${inc.id} .*\\(last 1\\)`));
    assert.match(exp.stdout, new RegExp(`keep +${good.id} .*needed by ${inc.id}`));
    assert.match(exp.stdout, new RegExp(`deleted ${old.id}`));
    assert.match(exp.stdout, /2 kept, 1 deleted, 1 unverified kept/);
    assert.ok(await fs.stat(path.join(repoDir, 'backups', edited.id, 'data')));

    // Without the key, nothing encrypted authenticates: the policy is held (exit 1), nothing deleted.
    const held = await runCli(['agent', 'expire', '--storage', repo, '--keep-last', '1']);
    assert.equal(held.code, 1);
    assert.match(held.stderr, /couchtrove: nothing deleted: backup .* does not authenticate .*give --key-file/);
    assert.equal((await fs.readdir(path.join(repoDir, 'backups'))).length, 3);
  });

  test('--parent latest refuses when no backup authenticates', async () => {
    const src = await smallDatadir(path.join(work.dir, 'latest-src'));
    const repoDir = path.join(work.dir, 'latest-repo');
    const only = await backup(src, `file://${repoDir}`);
    await editCreated(repoDir, only.id, '2099-01-01T00:00:00.000Z');
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', `file://${repoDir}`, '--key-file', keyFile, '--parent', 'latest']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`--parent latest: .* holds no backup that authenticates \\(1 do not, e.g. ${only.id}: wrong key or corrupted data`));
  });

  test('a key file open to group or others is refused, naming it and its mode', async () => {
    const loose = path.join(work.dir, 'loose.key');
    await fs.copyFile(keyFile, loose);
    await fs.chmod(loose, 0o666);
    const src = await smallDatadir(path.join(work.dir, 'key-src'));
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', `file://${work.dir}/key-repo`, '--key-file', loose]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `couchtrove: key file ${loose} has mode 0666: it must not be readable or writable by group or others (chmod 600 ${loose})\n`);
    await fs.chmod(loose, 0o400);
    await backup(src, `file://${work.dir}/key-repo`);
  });

  test('a symbolic link in the data directory fails the backup unless --follow-symlinks is given', async () => {
    const src = await smallDatadir(path.join(work.dir, 'link-src'));
    const elsewhere = path.join(work.dir, 'link-elsewhere.couch');
    await fs.writeFile(elsewhere, 'moved to another disk');
    await fs.symlink(elsewhere, path.join(src, '_users.couch'));
    const repo = `file://${work.dir}/link-repo`;
    const r = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', keyFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^couchtrove: a symbolic link in .* would not be backed up: _users\.couch\. Move the data back, or give --follow-symlinks .*\n$/);
    const f = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', keyFile, '--follow-symlinks', '--json']);
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stderr, `followed symbolic link _users.couch -> ${elsewhere}\n`);
    assert.equal((JSON.parse(f.stdout) as { files: number }).files, 3);
  });

  test('restore --config-dir does not overwrite without --force', async () => {
    const src = await smallDatadir(path.join(work.dir, 'cfg-src'));
    const etc = path.join(work.dir, 'cfg-etc');
    await fs.mkdir(etc);
    await fs.writeFile(path.join(etc, 'local.ini'), '[couchdb]\n');
    const repo = `file://${work.dir}/cfg-repo`;
    const b = await runCli(['agent', 'backup', '--data-dir', src, '--storage', repo, '--key-file', keyFile, '--config-dir', etc, '--json']);
    assert.equal(b.code, 0, b.stderr);
    const id = (JSON.parse(b.stdout) as { id: string }).id;
    const args = ['agent', 'restore', '--storage', repo, '--backup', id, '--key-file', keyFile, '--data-dir', path.join(work.dir, 'cfg-data'), '--config-dir', etc];
    const r = await runCli(args);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `couchtrove: configuration directory: ${etc}/local.ini already exists; use --force to replace it\n`);
    assert.equal((await runCli([...args, '--force'])).code, 0);
  });

  test('the staging directory of a killed restore is removed by the next restore, which says so', async () => {
    const src = await extractDatadir('v1', path.join(work.dir, 'kill-src'));
    const repo = `file://${work.dir}/kill-repo`;
    const { id } = await backup(src, repo);
    const target = path.join(work.dir, 'kill-target');
    const stage = path.join(target, `.couchtrove-restore-${id}`);
    const args = ['agent', 'restore', '--storage', repo, '--backup', id, '--key-file', keyFile, '--data-dir', target];
    const child = spawn(process.execPath, [BIN, ...args], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    // Killed as soon as it has begun writing into its staging directory.
    while (!(await fs.stat(path.join(stage, 'data')).catch(() => null))) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    await exited;
    assert.ok(await fs.stat(stage), 'the killed restore left its staging directory');

    const again = await runCli(args);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, `removed ${stage}, left by an interrupted restore\n`);
    assert.ok(!(await fs.readdir(target)).some((n) => n.startsWith('.couchtrove-restore-')));
  });
});
