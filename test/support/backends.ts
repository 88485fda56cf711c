// Runs a suite once on SQLite and once on a private PostgreSQL.
import { describe, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { skipPostgres, startPostgres, type PostgresServer } from './postgres.js';

export interface Backend {
  name: 'sqlite' | 'postgres';
  /** Options for openState: a fresh database each call (a new SQLite file / a new PostgreSQL schema-free db). */
  options(): Promise<{ databaseUrl?: string; sqliteFile?: string; stateDir?: string }>;
}

export function forEachBackend(title: string, suite: (backend: Backend) => void): void {
  describe(`${title} [sqlite]`, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-state-'));
    let n = 0;
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    suite({ name: 'sqlite', options: async () => ({ sqliteFile: path.join(dir, `state-${n++}.db`), stateDir: dir }) });
  });
  const skip = skipPostgres();
  describe(`${title} [postgres]`, { skip }, () => {
    let server: PostgresServer | undefined;
    let n = 0;
    before(async () => {
      server = await startPostgres();
    });
    after(async () => {
      await server?.stop();
    });
    suite({
      name: 'postgres',
      options: async () => {
        if (!server) throw new Error('postgres not started');
        // Each call gets its own database so tests do not see each other's rows.
        const pg = (await import('pg')).default;
        const name = `t${process.pid}_${n++}`;
        const admin = new pg.Client({ connectionString: server.url });
        await admin.connect();
        await admin.query(`CREATE DATABASE ${name}`);
        await admin.end();
        const u = new URL(server.url);
        u.pathname = `/${name}`;
        return { databaseUrl: u.toString() };
      },
    });
  });
}
