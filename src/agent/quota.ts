// The volume quota for client writes. A local instance's "volume" is a directory, so nothing in the
// file system stops CouchDB at its size: when the data directory reaches the quota, every user database
// gets a validate_doc_update that refuses writes from everyone but server admins (who can still delete
// and compact to make room), and the guard goes again once usage falls below 95% of the quota (after a
// resize, or once data was removed). The agent's own operations that add data are refused before that
// (Agent #checkQuota). Design documents written by admins bypass validate_doc_update, as CouchDB does.
//
// CouchDB's log is the tenant's (issue 23): usage is measured on the data directory (du, no request), and
// CouchDB is asked nothing while the volume has room and no guard is up. The agent remembers which
// databases it guarded (in memory, and in its state file that some may be guarded), so it never probes
// for the guard: it PUTs it while the volume is full (the database list is read then, to guard new ones)
// and removes it once, when usage falls, looking it up with _all_docs (a 200, never a 404 in the log).
import type { CouchClient } from './couchdb.js';

export const QUOTA_GUARD_ID = '_design/couchtrove-quota';
const RELEASE_BELOW = 0.95;

function guardFunction(used: number, quota: number): string {
  const msg = `volume full: ${used} of ${quota} bytes used; writes are refused until the volume is resized or data is removed`;
  return `function (newDoc, oldDoc, userCtx) { if (userCtx.roles.indexOf('_admin') !== -1) return; throw({ forbidden: ${JSON.stringify(msg)} }); }`;
}

export interface QuotaState {
  used: number;
  quota: number;
  full: boolean;
}

const userDbs = async (couch: CouchClient): Promise<string[]> => (await couch.allDbs()).filter((db) => !db.startsWith('_'));

/** The guards one agent process put up; `mayBeGuarded` is what its state file says (earlier processes, restores). */
export class QuotaGuard {
  /** Databases guarded by this process; null until it first acts. */
  #guarded: Set<string> | null = null;

  /**
   * Installs or removes the guard as usage requires; returns what it found and whether guards may be up
   * (for the state file: true while any may be).
   */
  async enforce(couch: CouchClient, used: number, quota: number, mayBeGuarded: boolean): Promise<QuotaState & { guarded: boolean }> {
    const full = used >= quota;
    if (full) {
      const dbs = await userDbs(couch);
      const guarded = new Set([...(this.#guarded ?? [])].filter((d) => dbs.includes(d)));
      for (const db of dbs) {
        if (guarded.has(db)) continue;
        // Without a rev: created, or a conflict because an earlier process left it; guarded either way.
        await couch.putDoc(db, { _id: QUOTA_GUARD_ID, language: 'javascript', validate_doc_update: guardFunction(used, quota), couchtrove: 'volume quota guard; removed when usage falls below 95% of the quota' });
        guarded.add(db);
      }
      this.#guarded = guarded;
      return { used, quota, full, guarded: true };
    }
    const anyUp = mayBeGuarded || (this.#guarded?.size ?? 0) > 0;
    if (!anyUp || used >= quota * RELEASE_BELOW) return { used, quota, full, guarded: anyUp };
    // Every database, once: a restore may have brought guards this process did not put up.
    for (const db of await userDbs(couch)) {
      const rows = await couch.allDocs<{ _rev: string }>(db, { key: JSON.stringify(QUOTA_GUARD_ID), include_docs: true }).catch(() => []);
      const rev = rows[0]?.doc?._rev;
      if (rev) await couch.deleteDoc(db, QUOTA_GUARD_ID, rev);
    }
    this.#guarded = new Set();
    return { used, quota, full, guarded: false };
  }
}
