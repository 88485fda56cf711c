// The progress bar shows on a terminal (bytes, MiB/s, ETA) and never with --json.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { main } from '../../src/cli/main.js';
import { extractDatadir } from '../support/fixtures.js';
import { tempDir } from '../support/tree.js';

function terminal(): PassThrough & { isTTY: boolean; columns: number; text: () => string } {
  const s = Object.assign(new PassThrough(), { isTTY: true, columns: 120, text: (): string => '' });
  let out = '';
  s.on('data', (d: Buffer) => (out += d.toString()));
  s.text = () => out;
  return s;
}

test('backup shows a progress bar on a terminal, and none with --json', async () => {
  const { dir, cleanup } = await tempDir('progress');
  try {
    const src = await extractDatadir('v1', path.join(dir, 'src'));
    const stdout = terminal();
    const stderr = terminal();
    const code = await main(['agent', 'backup', '--data-dir', src, '--storage', `file://${dir}/repo`], { stdout, stderr, env: process.env });
    assert.equal(code, 0, stderr.text());
    assert.match(stderr.text(), /backup \[.*\] 100% \| 8\.0\/8\.0 MiB \| [\d.]+ MiB\/s \| ETA \d+s \| 27\/27 files/);

    const quiet = terminal();
    assert.equal(await main(['agent', 'backup', '--data-dir', src, '--storage', `file://${dir}/repo`, '--json'], { stdout: terminal(), stderr: quiet, env: process.env }), 0);
    assert.equal(quiet.text(), '');
  } finally {
    await cleanup();
  }
});
