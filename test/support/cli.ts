// Runs the real `couchtrove` executable as a child process, as a user would, or its main() in this
// process (for the API commands against a test plane).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.js';

export const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/couchtrove.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `env` is merged over this process's environment; a variable set to undefined is removed. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input = ''): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const merged = { ...process.env, ...env };
    for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
    const child = spawn(process.execPath, [BIN, ...args], { env: merged, stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** The CLI's main() in this process with an empty environment: commander reads flag fallbacks from process.env, so give every setting as a flag. */
export async function runMain(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await main(args, { stdout, stderr, env: {} });
  return { code, out, err };
}

/** runMain against one API (`url()` is read per call, as the test plane's URL is known only in before()): plain, and --json parsed after asserting exit 0. */
export function apiCli(url: () => string): {
  cli: (...args: string[]) => ReturnType<typeof runMain>;
  json: <T>(...args: string[]) => Promise<T>;
} {
  const cli = (...args: string[]): ReturnType<typeof runMain> => runMain([...args, '--api-url', url()]);
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await cli(...args, '--json');
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as T;
  };
  return { cli, json };
}
