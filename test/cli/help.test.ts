// Help that is right (issue 23, item 6): every command's help, rendered as `couchtrove ... --help` prints
// it, names only flags that command has; options whose meaning depends on the command say what they do
// there (--name names the new instance at instance create, --databases creates them there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { commands } from '../../src/cli/main.js';
import { runMain } from '../support/cli.js';

async function help(path: string[]): Promise<string> {
  const r = await runMain([...path, '--help']);
  assert.equal(r.code, 0, r.err);
  return r.out;
}

/** The long flags a help text lists as the command's options, and every --flag it mentions anywhere. */
function flags(text: string): { listed: Set<string>; named: Set<string> } {
  return {
    listed: new Set([...text.matchAll(/^ {2}(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]!)),
    named: new Set([...text.matchAll(/(?<![\w-])(--[a-z][a-z-]*)/g)].map((m) => m[1]!)),
  };
}

test('every flag a command\'s help mentions is a flag of that command', async () => {
  const wrong: string[] = [];
  for (const c of commands) {
    const { listed, named } = flags(await help(c.path));
    assert.ok(listed.has('--help'), c.path.join(' '));
    for (const f of named) if (!listed.has(f)) wrong.push(`couchtrove ${c.path.join(' ')} --help names ${f}, which it does not take`);
  }
  assert.deepEqual(wrong, []);
});

test('the checker finds a flag a command lacks', () => {
  // What `agent restore`'s --to-time said at `database restore` before: "... of --stream".
  const { listed, named } = flags('Options:\n  --to-time <time>  Restore the newest cut of --stream\n  -h, --help  display help\n');
  assert.deepEqual([...named].filter((f) => !listed.has(f)), ['--stream']);
});

test('--name, --description and --databases say what they are for at each command', async () => {
  const line = (text: string, flag: string): string => {
    const at = text.split('\n').findIndex((l) => l.trimStart().startsWith(`${flag} `));
    assert.ok(at >= 0, `${flag} in\n${text}`);
    // The description runs on over indented lines.
    const rest = text.split('\n').slice(at + 1);
    const end = rest.findIndex((l) => /^ {2}-/.test(l) || l.trim() === '');
    return [text.split('\n')[at]!, ...rest.slice(0, end < 0 ? rest.length : end)].map((l) => l.trim()).join(' ');
  };
  const names = new Map<string, RegExp>([
    ['instance create', /Name of the new instance/], ['backup create', /Name of the new backup/],
    ['configuration create', /Name of the new configuration group/], ['schedule create', /Name of the new schedule/],
    ['cluster create', /Name of the new cluster/],
  ]);
  for (const c of commands.filter((x) => [...x.required, ...x.optional].includes('resourceName'))) {
    const want = names.get(c.path.join(' '));
    assert.ok(want, `${c.path.join(' ')} takes --name: this test must say what it names there`);
    assert.match(line(await help(c.path), '--name'), want);
  }
  assert.match(line(await help(['instance', 'create']), '--databases'), /databases to create in the new instance/);
  assert.match(line(await help(['user', 'grant-access']), '--databases'), /existing databases the user gets access to/);
  assert.match(line(await help(['user', 'revoke-access']), '--databases'), /lose/);
  assert.doesNotMatch(await help(['user', 'revoke-access']), /--database /, 'the old flag works but is not shown');
  assert.match(line(await help(['backup', 'create']), '--description'), /new backup/);
});

test('every API command that acts on one instance takes it as its argument', () => {
  // A cluster's command (cluster shrink --instance ID) takes the cluster as its argument.
  const api = commands.filter((c) => [...c.required, ...c.optional].includes('apiUrl') && c.required.includes('instanceRef') && !c.required.includes('clusterRef'));
  assert.ok(api.length > 30, `${api.length} commands`);
  for (const c of api) assert.equal(c.positional, 'instanceRef', `couchtrove ${c.path.join(' ')}`);
});
