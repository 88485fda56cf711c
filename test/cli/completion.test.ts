// `couchtrove completion bash|zsh` (issue 15): scripts generated from the command tree. The bash script is
// loaded into a real bash and asked for completions as the shell asks for them (COMP_WORDS/COMP_CWORD).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runMain } from '../support/cli.js';

async function script(shell: string): Promise<string> {
  const r = await runMain(['completion', shell]);
  assert.equal(r.code, 0, r.err);
  return r.out;
}

function complete(file: string, words: string[]): string[] {
  const arr = words.map((w) => `'${w}'`).join(' ');
  const out = execFileSync('bash', ['-c', `source '${file}'; COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _couchtrove; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

test('bash: commands, subcommands and only the options of the command being typed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-completion-'));
  try {
    const file = path.join(dir, 'couchtrove.bash');
    fs.writeFileSync(file, await script('bash'));
    assert.deepEqual(complete(file, ['couchtrove', 'ins']), ['instance']);
    const top = complete(file, ['couchtrove', '']);
    for (const c of ['agent', 'server', 'instance', 'user', 'backup', 'log', 'completion']) assert.ok(top.includes(c), `${c} in ${top.join(' ')}`);
    assert.deepEqual(complete(file, ['couchtrove', 'instance', 're']), ['restart', 'resize-volume', 'resize-flavor']);
    // After a positional NAME, options of that verb only: restart has no --size.
    const restart = complete(file, ['couchtrove', 'instance', 'restart', 'db1', '--']);
    assert.ok(restart.includes('--wait') && restart.includes('--json') && restart.includes('--instance'), restart.join(' '));
    assert.ok(!restart.includes('--size') && !restart.includes('--flavor'), restart.join(' '));
    assert.ok(complete(file, ['couchtrove', 'user', 'grant-access', 'db1', '--r']).includes('--role'));
    assert.deepEqual(complete(file, ['couchtrove', 'log', 't']), ['tail']);
    assert.deepEqual(complete(file, ['couchtrove', '--ver']), ['--version']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('zsh: a #compdef script naming every command with its description', async (t) => {
  const s = await script('zsh');
  assert.match(s, /^#compdef couchtrove\n/);
  assert.match(s, /'instance'\) list=\(.*'restart:Restart CouchDB'/);
  assert.match(s, /'instance restart'\) list=\(.*'--wait:/);
  assert.doesNotMatch(s.split('\n').find((l) => l.startsWith("    'instance restart')") && l.includes('--'))!, /--size/);
  const zsh = ['/usr/bin/zsh', '/bin/zsh'].find((p) => fs.existsSync(p));
  if (!zsh) {
    t.diagnostic('zsh is not installed: its syntax check and run are skipped');
    console.log('completion.test: zsh is not installed, the zsh script was not run');
    return;
  }
  execFileSync(zsh, ['-n', '-c', s]);
  // The script's function with zsh's _describe replaced by a printer: what it would offer.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-zsh-'));
  try {
    const file = path.join(dir, '_couchtrove');
    fs.writeFileSync(file, s);
    const offer = (words: string[]): string[] => execFileSync(zsh, ['-f', '-c', `compdef() { :; }; source '${file}'; _describe() { print -l -- "\${(@P)4}"; }; words=(${words.map((w) => `'${w}'`).join(' ')}); CURRENT=${words.length}; _couchtrove`], { encoding: 'utf8' })
      .split('\n').filter((l) => l !== '').map((l) => l.split(':')[0]!);
    assert.ok(offer(['couchtrove', 'instance', 're']).includes('resize-volume'));
    const restart = offer(['couchtrove', 'instance', 'restart', 'db1', '--']);
    assert.ok(restart.includes('--wait') && !restart.includes('--size'), restart.join(' '));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('completion refuses an unknown shell', async () => {
  const r = await runMain(['completion', 'tcsh']);
  assert.equal(r.code, 2);
  assert.match(r.err, /expected one of bash, zsh, fish/);
});
