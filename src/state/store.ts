// The state store: one small typed interface over the control plane's tables, with Kysely as the
// query builder. SQLite (better-sqlite3) under the state directory by default; PostgreSQL (pg) when a
// postgres:// URL is configured. Every write the control plane relies on for correctness (claiming an
// instance for a task, moving a backup out of a running state) is a compare-and-set `update` with
// `expect`, which is atomic on both databases.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, type Migration, type MigrationProvider } from 'kysely';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import type { Database, TableName } from './schema.js';
import { migrations } from './migrations.js';
import { makeSqlitePrivate } from '../util/fs.js';

export type Row<T extends TableName> = Database[T];
/** Equality per column; an array means "one of"; null means IS NULL. */
export type Where<T extends TableName> = { [K in keyof Row<T>]?: Row<T>[K] | readonly Row<T>[K][] };

export interface Page {
  limit?: number;
  /** Id of the last row of the previous page. */
  marker?: string;
}

export interface StateStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Where the state is, without credentials. */
  readonly location: string;
  insert<T extends TableName>(table: T, row: Row<T>): Promise<void>;
  get<T extends TableName>(table: T, id: string): Promise<Row<T> | undefined>;
  /** Rows matching where, oldest first (then by id); with page.marker, the rows after that one. */
  find<T extends TableName>(table: T, where?: Where<T>, page?: Page): Promise<Row<T>[]>;
  /** Updates the row if it also matches expect; true when a row changed. */
  update<T extends TableName>(table: T, id: string, patch: Partial<Row<T>>, expect?: Where<T>): Promise<boolean>;
  /** Inserts the row, or replaces every column of the row with the same id. */
  upsert<T extends TableName>(table: T, row: Row<T>): Promise<void>;
  remove<T extends TableName>(table: T, id: string, expect?: Where<T>): Promise<boolean>;
  /**
   * Takes over at most `limit` NEW or RUNNING tasks of these kinds whose lease ended before `at` (or that
   * have none): owner and lease_until are set, and the rows are returned as they were before. On PostgreSQL
   * the rows are locked with SELECT ... FOR UPDATE SKIP LOCKED in one transaction, so processes sweeping at
   * the same moment never take the same task, nor wait on each other.
   */
  claimTasks(owner: string, at: string, leaseUntil: string, kinds: readonly string[], limit: number): Promise<Row<'tasks'>[]>;
  /** Extends the lease of these NEW or RUNNING tasks that owner still holds, in one statement; returns the ids it still holds. */
  renewTasks(owner: string, ids: readonly string[], leaseUntil: string): Promise<string[]>;
  /** Takes or renews the lease `id` for owner until `expires` when it is free, expired at `at`, or owner's already; true when owner holds it. */
  acquireLease(id: string, owner: string, at: string, expires: string): Promise<boolean>;
  close(): Promise<void>;
}

export class MarkerNotFoundError extends Error {
  constructor(readonly marker: string) {
    super(`marker ${JSON.stringify(marker)} not found`);
    this.name = 'MarkerNotFoundError';
  }
}

export interface OpenStateOptions {
  /** postgres://... ; when absent, SQLite in stateDir/state.db. */
  databaseUrl?: string;
  stateDir?: string;
  /** SQLite file (overrides stateDir), or ':memory:'. */
  sqliteFile?: string;
  /** PostgreSQL connections in the pool (default 5). */
  poolSize?: number;
}

const ORDERED_BY_CREATED = new Set<TableName>(['projects', 'instances', 'backups', 'tasks', 'configurations', 'deleted_instances', 'clusters']);

// Kysely's types are keyed by literal table names; the generic methods below pick the table at run
// time, so they go through this loose view of the same database. Column names still come from the
// typed Where/Row parameters of the public interface.
type LooseDb = Kysely<Record<string, Record<string, unknown>>>;

class KyselyStateStore implements StateStore {
  private readonly loose: LooseDb;
  constructor(readonly kind: 'sqlite' | 'postgres', readonly location: string, readonly db: Kysely<Database>) {
    this.loose = db as unknown as LooseDb;
  }

  async insert<T extends TableName>(table: T, row: Row<T>): Promise<void> {
    await this.loose.insertInto(table as string).values(row as unknown as Record<string, unknown>).execute();
  }

  async get<T extends TableName>(table: T, id: string): Promise<Row<T> | undefined> {
    const r = await this.loose.selectFrom(table as string).selectAll().where('id', '=', id).executeTakeFirst();
    return r as Row<T> | undefined;
  }

  async find<T extends TableName>(table: T, where: Where<T> = {}, page: Page = {}): Promise<Row<T>[]> {
    let q = this.loose.selectFrom(table as string).selectAll();
    q = applyWhere(q, where as Record<string, unknown>);
    const byCreated = ORDERED_BY_CREATED.has(table);
    if (page.marker !== undefined) {
      const m = (await applyWhere(this.loose.selectFrom(table as string).selectAll(), where as Record<string, unknown>)
        .where('id', '=', page.marker).executeTakeFirst()) as Record<string, unknown> | undefined;
      if (!m) throw new MarkerNotFoundError(page.marker);
      if (byCreated) {
        const created = m.created as string;
        q = q.where((eb) => eb.or([eb('created', '>', created), eb.and([eb('created', '=', created), eb('id', '>', page.marker)])]));
      } else {
        q = q.where('id', '>', page.marker);
      }
    }
    if (byCreated) q = q.orderBy('created').orderBy('id');
    else q = q.orderBy('id');
    if (page.limit !== undefined) q = q.limit(page.limit);
    return (await q.execute()) as unknown as Row<T>[];
  }

  async update<T extends TableName>(table: T, id: string, patch: Partial<Row<T>>, expect: Where<T> = {}): Promise<boolean> {
    if (Object.keys(patch).length === 0) return (await this.find(table, { ...expect, id } as Where<T>)).length > 0;
    let q = this.loose.updateTable(table as string).set(patch as Record<string, unknown>).where('id', '=', id);
    q = applyWhere(q, expect as Record<string, unknown>);
    const r = await q.executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async upsert<T extends TableName>(table: T, row: Row<T>): Promise<void> {
    const values = row as unknown as Record<string, unknown>;
    const rest = Object.fromEntries(Object.entries(values).filter(([k]) => k !== 'id'));
    await this.loose.insertInto(table as string).values(values).onConflict((oc) => oc.column('id').doUpdateSet(rest as never)).execute();
  }

  async remove<T extends TableName>(table: T, id: string, expect: Where<T> = {}): Promise<boolean> {
    let q = this.loose.deleteFrom(table as string).where('id', '=', id);
    q = applyWhere(q, expect as Record<string, unknown>);
    const r = await q.executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async claimTasks(owner: string, at: string, leaseUntil: string, kinds: readonly string[], limit: number): Promise<Row<'tasks'>[]> {
    if (kinds.length === 0 || limit <= 0) return [];
    return this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom('tasks').selectAll()
        .where('status', 'in', ['NEW', 'RUNNING'])
        .where('kind', 'in', [...kinds])
        .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', at)]))
        .orderBy('created').orderBy('id').limit(limit);
      // SQLite has no row locks (and needs none: one process per state directory, src/state/lock.ts).
      if (this.kind === 'postgres') q = q.forUpdate().skipLocked();
      const rows = await q.execute();
      if (rows.length > 0) {
        await trx.updateTable('tasks').set({ owner, lease_until: leaseUntil }).where('id', 'in', rows.map((r) => r.id)).execute();
      }
      return rows;
    });
  }

  async renewTasks(owner: string, ids: readonly string[], leaseUntil: string): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await this.db.updateTable('tasks').set({ lease_until: leaseUntil })
      .where('id', 'in', [...ids]).where('owner', '=', owner).where('status', 'in', ['NEW', 'RUNNING'])
      .returning('id').execute();
    return rows.map((r) => r.id);
  }

  async acquireLease(id: string, owner: string, at: string, expires: string): Promise<boolean> {
    await this.db.insertInto('leases').values({ id, owner, expires }).onConflict((oc) => oc.column('id').doNothing()).execute();
    // Compare-and-set: renew our own lease, or take one whose holder let it lapse.
    const r = await this.db.updateTable('leases').set({ owner, expires })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('owner', '=', owner), eb('expires', '<', at)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

// The select, update and delete builders share this method; their overloads differ too much for one
// generic signature, hence the narrow structural view.
interface Whereable {
  where(col: string, op: '=' | 'in' | 'is', value: unknown): Whereable;
}

function applyWhere<Q>(query: Q, where: Record<string, unknown>): Q {
  let q = query as unknown as Whereable;
  for (const [col, value] of Object.entries(where)) {
    if (value === undefined) continue;
    if (value === null) q = q.where(col, 'is', null);
    else if (Array.isArray(value)) {
      if (value.length === 0) q = q.where(col, 'in', [null]); // matches nothing
      else q = q.where(col, 'in', value);
    } else q = q.where(col, '=', value);
  }
  return q as unknown as Q;
}

/** Opens the store and brings its schema up to date. */
export async function openState(options: OpenStateOptions): Promise<StateStore> {
  let db: Kysely<Database>;
  let kind: 'sqlite' | 'postgres';
  let location: string;
  if (options.databaseUrl) {
    const url = new URL(options.databaseUrl);
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      throw new Error(`unsupported state database URL scheme ${JSON.stringify(url.protocol)}: expected postgres://`);
    }
    kind = 'postgres';
    location = `postgres://${url.hostname}${url.port ? ':' + url.port : ''}${url.pathname}`;
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.poolSize ?? 5,
      // BIGINT (oid 20) columns hold byte counts far below 2^53: read them as numbers.
      types: { getTypeParser: ((oid: number, format?: string) => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser },
    });
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  } else {
    const file = options.sqliteFile ?? path.join(options.stateDir ?? '.', 'state.db');
    if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    kind = 'sqlite';
    location = file;
    if (file !== ':memory:') makeSqlitePrivate(file);
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('busy_timeout = 5000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  }
  const provider: MigrationProvider = { getMigrations: async (): Promise<Record<string, Migration>> => migrations };
  const migrator = new Migrator({ db, provider, migrationTableName: 'couchtrove_migrations', migrationLockTableName: 'couchtrove_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`state store ${location}: migration ${failed?.migrationName ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return new KyselyStateStore(kind, location, db);
}

export function now(): string {
  return new Date().toISOString();
}
