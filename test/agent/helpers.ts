// Shared by the agent's test files: instances prepared under a private temporary directory, their
// admin credentials, raw HTTP to their CouchDB, and a cleanup that stops every CouchDB started.
import * as fsp from 'node:fs/promises';
import { Agent } from '../../src/agent/agent.js';
import { instanceFiles, couchUrl } from '../../src/agent/agent.js';
import type { InstanceSettings } from '../../src/agent/protocol.js';
import { killHard, newSettings, removeDir, tempDir, testCouchdb, type TestCouchdb } from '../support/couchdb.js';

export const couch: TestCouchdb = testCouchdb();

export interface TestInstance {
  agent: Agent;
  settings: InstanceSettings;
  url: string;
}

export class Harness {
  readonly agents: Agent[] = [];
  readonly pids = new Set<number>();
  /** Every agent's log lines. */
  readonly logs: string[] = [];
  root = '';

  async init(prefix: string): Promise<this> {
    this.root = await tempDir(prefix);
    return this;
  }

  async settings(name: string, extra: Partial<InstanceSettings> = {}): Promise<InstanceSettings> {
    return newSettings(this.root, name, couch, extra);
  }

  async open(name: string): Promise<Agent> {
    const agent = await Agent.open(`${this.root}/${name}/agent`, { startTimeoutMs: couch.startTimeoutMs, stopTimeoutMs: 20_000, log: (l) => this.logs.push(l) });
    this.agents.push(agent);
    return agent;
  }

  /** A prepared, RUNNING instance. */
  async instance(name: string, extra: Partial<InstanceSettings> = {}): Promise<TestInstance> {
    const settings = await this.settings(name, extra);
    const agent = await this.open(name);
    const st = await agent.prepare(settings);
    if (agent.couchdbPid) this.pids.add(agent.couchdbPid);
    if (st.state !== 'RUNNING') throw new Error(`instance ${name} did not start: ${st.state} ${st.reason ?? ''}`);
    return { agent, settings, url: couchUrl(settings) };
  }

  track(agent: Agent): void {
    if (agent.couchdbPid) this.pids.add(agent.couchdbPid);
  }

  async cleanup(): Promise<void> {
    for (const a of this.agents) {
      if (a.couchdbPid) this.pids.add(a.couchdbPid);
      await a.stop().catch(() => undefined);
    }
    for (const pid of this.pids) killHard(pid);
    if (this.root) await removeDir(this.root);
  }
}

export async function adminOf(settings: InstanceSettings): Promise<{ username: string; password: string }> {
  return JSON.parse(await fsp.readFile(instanceFiles(settings).secret, 'utf8')) as { username: string; password: string };
}

/** Raw HTTP to CouchDB, for checking what the agent did from the outside. */
export async function http(
  url: string,
  method: string,
  path: string,
  opts: { auth?: { username: string; password: string }; body?: unknown } = {},
): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (opts.auth) headers.authorization = `Basic ${Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64')}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${url}${path}`, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body };
}

export async function rejectsWithCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code !== code) throw new Error(`expected error code ${code}, got ${e.code ?? e.name}: ${e.message}`);
    if (message && !message.test(e.message)) throw new Error(`expected message matching ${message}, got: ${e.message}`);
    return e;
  }
  throw new Error(`expected an error with code ${code}, but it succeeded`);
}

/** Polls check until it returns true (CouchDB applies some changes a moment later); false after timeoutMs. */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
