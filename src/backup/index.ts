// The backup engine: full physical backups of CouchDB data directories (docs/backup-format.md).
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import type { CouchdbMetadata } from './format.js';
import { openBackup } from './repository.js';
import { summaryOf } from './backup.js';
import type { BackupSummary } from './types.js';

export { createBackup } from './backup.js';
export { restoreBackup } from './restore.js';
export { verifyBackup } from './verify.js';
export { listBackups, deleteBackup, type IncompleteBackup, type UnverifiedBackup } from './list.js';
export { BackupNotFoundError } from './repository.js';
export { expireBackups, plan as retentionPlan, type RetentionPolicy, type ExpireResult } from './expire.js';
export type * from './types.js';
export type { CouchdbMetadata, CouchdbDatabase, Catalog, Manifest } from './format.js';

/** What the agent needs before a restore: the summary and the recorded CouchDB metadata. */
export async function readBackupMetadata(storage: Backend, id: string, key?: KeyMaterial): Promise<{ summary: BackupSummary; couchdb: CouchdbMetadata | null }> {
  const { manifest, catalog } = await openBackup(storage, id, key);
  return { summary: summaryOf(manifest.body), couchdb: catalog.couchdb };
}
