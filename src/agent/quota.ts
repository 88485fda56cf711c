// The volume quota for client writes. A local instance's "volume" is a directory, so nothing in the
// file system stops CouchDB at its size: when the data directory reaches the quota, every user database
// gets a validate_doc_update that refuses writes from everyone but server admins (who can still delete
// and compact to make room), and the guard goes again once usage falls below 95% of the quota (after a
// resize, or once data was removed). The agent's own operations that add data are refused before that
// (Agent #checkQuota). Design documents written by admins bypass validate_doc_update, as CouchDB does.
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

/** Installs or removes the guard on every user database; returns what it found. */
export async function enforceQuota(couch: CouchClient, used: number, quota: number): Promise<QuotaState> {
  const dbs = (await couch.allDbs()).filter((db) => !db.startsWith('_'));
  const full = used >= quota;
  for (const db of dbs) {
    const current = await couch.getDoc<{ _rev: string; validate_doc_update?: string }>(db, QUOTA_GUARD_ID);
    if (full && !current) {
      await couch.putDoc(db, { _id: QUOTA_GUARD_ID, language: 'javascript', validate_doc_update: guardFunction(used, quota), couchtrove: 'volume quota guard; removed when usage falls below 95% of the quota' });
    } else if (!full && current && used < quota * RELEASE_BELOW) {
      await couch.deleteDoc(db, QUOTA_GUARD_ID, current._rev);
    }
  }
  return { used, quota, full };
}
