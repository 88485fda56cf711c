// A control plane over the fakes (FakeCompute/FakeAgent/FakeRepository) for unit tests of its logic.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { openState, type StateStore, type OpenStateOptions } from '../../src/state/index.js';
import { loadServerConfig, type ServerConfig } from '../../src/config/server.js';
import { ControlPlane } from '../../src/tasks/control.js';
import { buildApi } from '../../src/api/server.js';
import { FakeCompute, FakeRepository } from './fake-agent.js';

export interface TestPlane {
  plane: ControlPlane;
  app: FastifyInstance;
  store: StateStore;
  compute: FakeCompute;
  repo: FakeRepository;
  config: ServerConfig;
  stateDir: string;
  /** Simulates a crash: tasks are abandoned where they are, nothing is marked. */
  crash(): Promise<void>;
  close(): Promise<void>;
}

export interface PlaneOptions {
  state?: OpenStateOptions;
  env?: Record<string, string>;
  /** Reuse these across a simulated restart. */
  compute?: FakeCompute;
  repo?: FakeRepository;
  stateDir?: string;
  watchdogMs?: number;
}

export async function startPlane(o: PlaneOptions = {}): Promise<TestPlane> {
  const stateDir = o.stateDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-plane-'));
  const config = loadServerConfig({ env: { COUCHTROVE_BACKUP_ENCRYPTION: 'false', ...o.env }, overrides: { stateDir } });
  const store = await openState(o.state ?? { stateDir });
  const repo = o.repo ?? new FakeRepository();
  const compute = o.compute ?? new FakeCompute(repo);
  const plane = new ControlPlane({ config, store, compute, backups: repo, watchdogMs: o.watchdogMs ?? 200, progressMs: 20 });
  await plane.start();
  const app = await buildApi({ plane });
  await app.ready();
  let closed = false;
  return {
    plane, app, store, compute, repo, config, stateDir,
    crash: async () => {
      closed = true;
      await plane.stop();
      await app.close();
      await store.close();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await plane.stop();
      await app.close();
      await store.close();
      if (!o.stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export const H = { 'x-auth-token': 'notused', 'content-type': 'application/json' };

/** Polls until pred holds (or fails after ms). */
export async function until<T>(what: string, f: () => Promise<T>, pred: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (pred(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: last ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
