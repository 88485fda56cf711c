// What the agent's hand commands share: a CouchManager for --couchdb-url with admin credentials from
// COUCHDB_USER/COUCHDB_PASSWORD (never argv), passwords from standard input, and output helpers.
// The agent's modules load only when a command runs: every CLI start pays for what main.ts imports.
import { UsageError } from '../../../config/option.js';
import type { CouchClient } from '../../../agent/couchdb.js';
import type { CouchManager } from '../../../agent/manage.js';
import type { CommandIO } from '../../command.js';

export async function couchClient(url: string, env: NodeJS.ProcessEnv): Promise<CouchClient> {
  const username = env.COUCHDB_USER;
  const password = env.COUCHDB_PASSWORD;
  if (!username || password === undefined) throw new UsageError('set COUCHDB_USER and COUCHDB_PASSWORD to a CouchDB server admin (credentials are never taken from the command line)');
  const { CouchClient } = await import('../../../agent/couchdb.js');
  return new CouchClient(url, { username, password });
}

export async function couchManager(url: string, env: NodeJS.ProcessEnv): Promise<CouchManager> {
  const { CouchManager } = await import('../../../agent/manage.js');
  return new CouchManager(await couchClient(url, env));
}

/** The first line of standard input, without its line break. */
export async function readPasswordFromStdin(stdin: NodeJS.ReadableStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (line === '') throw new UsageError('--password-stdin: standard input holds no password');
  return line;
}

export function printJson(io: CommandIO, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value)}\n`);
}
