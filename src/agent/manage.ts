// Databases, users, access and the root admin of one CouchDB 3.x, over its HTTP API as a server
// admin. Used by the agent (behind its RPC) and by the `couchtrove agent database|user|root`
// commands (against a CouchDB URL). Every operation checks all its input, and everything it will
// touch, before the first write; a multi-step change that fails half-way is undone.
import { randomBytes } from 'node:crypto';
import { mapLimit } from '../util/concurrency.js';
import { AgentError, invalid, notFound } from './errors.js';
import { CouchClient, CouchHttpError, httpError, userDocId, waitForCredentials, type SecurityObject, type UserDoc } from './couchdb.js';
import { checkDatabaseList, checkDatabaseName, checkPassword, checkRoles, checkUserName, ROOT_USER } from './validate.js';
import type { AccessRole, DataStats, NewUser, UserInfo } from './protocol.js';

export const SYSTEM_DATABASES = ['_users', '_replicator'];
const USERS = '_users';

/** One promise chain per key: read-modify-write of one _security object at a time. */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return next;
  }
}

export function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}


export interface ManagerOptions {
  /** Runs before anything that adds data (a database, a user): the agent's volume quota check. */
  beforeGrowth?: () => Promise<void>;
}

export class CouchManager {
  readonly #security = new KeyedMutex();

  constructor(
    readonly couch: CouchClient,
    private readonly options: ManagerOptions = {},
  ) {}

  // --- databases ----------------------------------------------------------------------------

  /** User databases (system databases, whose names begin with '_', are hidden). */
  async listDatabases(): Promise<string[]> {
    return (await this.couch.allDbs()).filter((d) => !d.startsWith('_')).sort();
  }

  async createDatabase(name: string): Promise<void> {
    checkDatabaseName(name);
    await this.options.beforeGrowth?.();
    const r = await this.couch.createDb(name);
    if (r === 'exists') throw new AgentError('ALREADY_EXISTS', `database ${name} already exists`);
    // Members limited to admins until access is granted: explicit, whatever default_security says.
    try {
      await this.#updateSecurity(name, (sec) => {
        sec.members = { names: sec.members?.names ?? [], roles: [...new Set([...(sec.members?.roles ?? []), '_admin'])] };
        sec.admins = { names: sec.admins?.names ?? [], roles: sec.admins?.roles ?? [] };
        return true;
      });
    } catch (err) {
      await this.couch.deleteDb(name).catch(() => undefined);
      throw err;
    }
  }

  async deleteDatabase(name: string): Promise<void> {
    checkDatabaseName(name);
    if (!(await this.couch.deleteDb(name))) throw notFound(`database ${name} does not exist`);
  }

  async #requireDatabases(dbs: string[]): Promise<void> {
    const missing: string[] = [];
    for (const db of dbs) if ((await this.couch.dbInfo(db)) === null) missing.push(db);
    if (missing.length === 1) throw notFound(`database ${missing[0]} does not exist`);
    if (missing.length > 1) throw notFound(`databases ${missing.join(', ')} do not exist`);
  }

  /** Read-modify-write of a database's _security, keeping every entry `change` does not touch. */
  async #updateSecurity(db: string, change: (sec: SecurityObject) => boolean): Promise<boolean> {
    return this.#security.run(db, async () => {
      const r = await this.couch.raw<SecurityObject>('GET', `/${encodeURIComponent(db)}/_security`);
      if (r.status === 404) throw notFound(`database ${db} does not exist`);
      if (r.status !== 200) throw httpError(r.status, r.body, 'GET', `/${encodeURIComponent(db)}/_security`);
      const sec = structuredClone(r.body ?? {});
      if (!change(sec)) return false;
      await this.couch.putSecurity(db, sec);
      return true;
    });
  }

  // --- users --------------------------------------------------------------------------------

  async #userDoc(name: string): Promise<UserDoc | null> {
    return this.couch.getDoc<UserDoc>(USERS, userDocId(name));
  }

  async #requireUser(name: string): Promise<UserDoc> {
    const doc = await this.#userDoc(name);
    if (!doc) throw notFound(`user ${name} does not exist`);
    return doc;
  }

  /** Each database's _security members names (and, with admins, admins names). */
  async #securityByDb(dbs: string[]): Promise<Map<string, SecurityObject>> {
    const secs = await mapLimit(dbs, 8, async (db) => [db, await this.couch.getSecurity(db).catch(() => ({}) as SecurityObject)] as const);
    return new Map(secs);
  }

  async listUsers(): Promise<UserInfo[]> {
    const rows = await this.couch.allDocs<UserDoc>(USERS, { include_docs: true, startkey: JSON.stringify('org.couchdb.user:'), endkey: JSON.stringify('org.couchdb.user:\ufff0') });
    const secs = await this.#securityByDb(await this.listDatabases());
    return rows
      .filter((r) => r.doc && r.doc.type === 'user')
      .map((r) => this.#info(r.doc!, secs))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async getUser(name: string): Promise<UserInfo> {
    checkUserName(name);
    const doc = await this.#requireUser(name);
    return this.#info(doc, await this.#securityByDb(await this.listDatabases()));
  }

  #info(doc: UserDoc, secs: Map<string, SecurityObject>): UserInfo {
    // A database admin can read and write too: it counts as access with role admin.
    const adminOf = [...secs].filter(([, s]) => s.admins?.names?.includes(doc.name)).map(([db]) => db);
    const databases = [...secs].filter(([db, s]) => s.members?.names?.includes(doc.name) || adminOf.includes(db)).map(([db]) => db);
    // adminOf only when there is one: the shape stays what older callers compare against.
    return { name: doc.name, roles: doc.roles ?? [], databases, ...(adminOf.length ? { adminOf } : {}) };
  }

  async createUser(user: NewUser): Promise<void> {
    if (!user || typeof user !== 'object') throw invalid('user must be {name, password, roles?, databases?}');
    const name = checkUserName(user.name);
    const password = checkPassword(user.password);
    const roles = checkRoles(user.roles);
    const dbs = checkDatabaseList(user.databases);
    await this.#requireDatabases(dbs);
    if (await this.#userDoc(name)) throw new AgentError('ALREADY_EXISTS', `user ${name} already exists`);
    await this.options.beforeGrowth?.();
    const doc: UserDoc = { _id: userDocId(name), name, type: 'user', roles, password };
    if ((await this.couch.putDoc(USERS, doc)) === 'conflict') throw new AgentError('ALREADY_EXISTS', `user ${name} already exists`);
    try {
      await this.#grant(name, dbs);
    } catch (err) {
      const created = await this.#userDoc(name).catch(() => null);
      if (created?._rev) await this.couch.deleteDoc(USERS, created._id, created._rev).catch(() => undefined);
      throw err;
    }
  }

  async deleteUser(name: string): Promise<void> {
    checkUserName(name);
    const doc = await this.#requireUser(name);
    // Access goes first: a name left in a _security object would give a later user of the same name access.
    for (const db of await this.couch.allDbs()) {
      await this.#updateSecurity(db, (sec) => {
        let changed = false;
        for (const part of ['members', 'admins'] as const) {
          const names = sec[part]?.names;
          if (names?.includes(name)) {
            sec[part]!.names = names.filter((n) => n !== name);
            changed = true;
          }
        }
        return changed;
      }).catch((err: unknown) => {
        // A database deleted meanwhile has no _security left to clean.
        if (!(err instanceof AgentError && err.code === 'NOT_FOUND')) throw err;
      });
    }
    let rev = doc._rev!;
    for (let attempt = 0; ; attempt++) {
      const r = await this.couch.deleteDoc(USERS, doc._id, rev);
      if (r !== 'conflict') return;
      if (attempt >= 3) throw new AgentError('CONFLICT', `user ${name} is being changed by someone else; try again`);
      rev = (await this.#requireUser(name))._rev!;
    }
  }

  async changePassword(name: string, password: string): Promise<void> {
    checkUserName(name);
    checkPassword(password);
    for (let attempt = 0; ; attempt++) {
      const doc = await this.#requireUser(name);
      // Keep every field; CouchDB replaces `password` by a new salt and derived key.
      if ((await this.couch.putDoc(USERS, { ...doc, password })) === 'ok') break;
      if (attempt >= 3) throw new AgentError('CONFLICT', `user ${name} is being changed by someone else; try again`);
    }
    // CouchDB's authentication cache follows _users through its changes feed: the old password works
    // until the cache has the new document. Done means the new password works (and so the old one no longer).
    await waitForCredentials(this.couch.baseUrl, { username: name, password }, false, `the new password of user ${name}`);
  }

  async grantAccess(name: string, databases: string[], role: AccessRole = 'member'): Promise<void> {
    checkUserName(name);
    const dbs = checkDatabaseList(databases);
    if (dbs.length === 0) throw invalid('no databases given');
    if (role !== 'admin' && role !== 'member') throw invalid(`role must be admin or member, got ${JSON.stringify(role)}`);
    await this.#requireUser(name);
    await this.#requireDatabases(dbs);
    await this.#grant(name, dbs, role);
  }

  /**
   * Puts name in members.names of each database and, for role admin, in admins.names (CouchDB lets only
   * database admins write design documents, so views and Mango indexes); role member takes it out of
   * admins. Each database's previous _security comes back when one fails.
   */
  async #grant(name: string, dbs: string[], role: AccessRole = 'member'): Promise<void> {
    const before = new Map<string, SecurityObject>();
    try {
      for (const db of dbs) {
        await this.#updateSecurity(db, (sec) => {
          const prev = structuredClone(sec);
          const members = sec.members?.names ?? [];
          const admins = sec.admins?.names ?? [];
          const wantAdmin = role === 'admin';
          if (members.includes(name) && admins.includes(name) === wantAdmin) return false;
          sec.members = { ...sec.members, names: members.includes(name) ? members : [...members, name], roles: sec.members?.roles ?? [] };
          sec.admins = { ...sec.admins, names: wantAdmin ? (admins.includes(name) ? admins : [...admins, name]) : admins.filter((n) => n !== name), roles: sec.admins?.roles ?? [] };
          before.set(db, prev);
          return true;
        });
      }
    } catch (err) {
      for (const [db, prev] of before) await this.#updateSecurity(db, (sec) => {
        sec.members = prev.members ?? { names: [], roles: [] };
        sec.admins = prev.admins ?? { names: [], roles: [] };
        return true;
      }).catch(() => undefined);
      throw err;
    }
  }

  /** Takes name out of the database's members and admins. */
  #removeMember(db: string, name: string): Promise<boolean> {
    return this.#updateSecurity(db, (sec) => {
      let changed = false;
      for (const part of ['members', 'admins'] as const) {
        const names = sec[part]?.names ?? [];
        if (names.includes(name)) {
          sec[part]!.names = names.filter((n) => n !== name);
          changed = true;
        }
      }
      return changed;
    });
  }

  /** Document count and sizes of the user databases. */
  async dataStats(): Promise<DataStats> {
    const dbs = await this.listDatabases();
    const infos = await mapLimit(dbs, 8, (db) => this.couch.dbInfo(db).catch(() => null));
    const s: DataStats = { databases: dbs.length, documents: 0, fileBytes: 0, activeBytes: 0 };
    for (const i of infos) {
      if (!i) continue;
      s.documents += i.doc_count;
      s.fileBytes += i.sizes?.file ?? 0;
      s.activeBytes += i.sizes?.active ?? 0;
    }
    return s;
  }

  async revokeAccess(name: string, database: string): Promise<void> {
    checkUserName(name);
    checkDatabaseName(database);
    await this.#requireDatabases([database]);
    const user = await this.#userDoc(name);
    const removed = await this.#removeMember(database, name);
    if (!removed) {
      throw notFound(user ? `user ${name} has no access to database ${database}` : `user ${name} does not exist`);
    }
  }

  // --- root ---------------------------------------------------------------------------------

  /** persist false: the value is set in memory only, and the caller keeps it in local.ini (agent.ts). */
  async enableRoot(password?: string, persist = true): Promise<{ name: 'root'; password: string }> {
    const pw = password === undefined ? generatePassword() : checkPassword(password, 'root password');
    await this.couch.putConfig('admins', ROOT_USER, pw, persist);
    // CouchDB 3.5 hashes a new admin password in the background; until then the admin cannot log in.
    await waitForCredentials(this.couch.baseUrl, { username: ROOT_USER, password: pw }, true, 'the root password');
    return { name: 'root', password: pw };
  }

  async isRootEnabled(): Promise<boolean> {
    return (await this.couch.getConfig('admins', ROOT_USER)) !== null;
  }

  async disableRoot(persist = true): Promise<void> {
    if (!(await this.couch.deleteConfig('admins', ROOT_USER, persist))) throw notFound('root is not enabled');
  }

  // --- system databases ---------------------------------------------------------------------

  async ensureSystemDatabases(): Promise<string[]> {
    const created: string[] = [];
    for (const db of SYSTEM_DATABASES) {
      if ((await this.#systemDbInfo(db)) === null && (await this.couch.createDb(db)) === 'created') created.push(db);
    }
    return created;
  }

  /**
   * CouchDB 3.5 with single_node = true creates _users and _replicator itself just after start; a GET racing
   * that creation may answer 412 file_exists (seen on a loaded machine when a restore brought _dbs back
   * without their shard files). Asked again until the creation is over.
   */
  async #systemDbInfo(db: string): Promise<unknown> {
    for (let i = 0; ; i++) {
      try {
        return await this.couch.dbInfo(db);
      } catch (err) {
        if (!(err instanceof CouchHttpError && err.httpStatus === 412) || i >= 100) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }
}
