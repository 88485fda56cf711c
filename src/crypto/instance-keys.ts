// Per-instance backup keys (docs/backup-format.md, "Key hierarchy"). Every instance's backups and archive
// are written with its own key, derived from the server's master key file (KeyMaterial.deriveInstanceKey),
// so a key that leaks from one instance (its agent, its container) opens that instance's backups only.
// The control plane writes each instance key as a generated-format key file, 0600 in a 0700 directory of
// its state directory, for the agent that needs it; the master key file itself is never given to an agent
// except to restore a backup written before per-instance keys (no keyId), and never to a container.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { instanceKeyId, keyFileText, KeyRing, readKeyFile } from './keys.js';
import { CouchtroveError } from '../util/errors.js';

const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export class InstanceKeys {
  #ring: Promise<KeyRing> | undefined;
  constructor(
    /** The server's master key file (backup_key_file, or <state_dir>/backup.key). */
    readonly masterFile: string,
    /** Where instance key files are written (<state_dir>/keys). */
    readonly dir: string,
  ) {}

  /** The master and every key derived from it, for the control plane's own reads. */
  ring(): Promise<KeyRing> {
    if (!this.#ring) {
      this.#ring = readKeyFile(this.masterFile).then((m) => new KeyRing(m));
      this.#ring.catch(() => (this.#ring = undefined)); // a key file fixed later is read again
    }
    return this.#ring;
  }

  /** The key file text of an instance's key (what a container gets copied in). */
  async text(instanceId: string): Promise<string> {
    if (!INSTANCE_ID.test(instanceId)) throw new CouchtroveError(`invalid instance id ${JSON.stringify(instanceId)}`);
    return keyFileText(await (await this.ring()).deriveInstanceKey(instanceId));
  }

  /**
   * The host path of an instance's key file, written on first use (and again should its content differ:
   * the master key was replaced). Written to a temporary name with mode 0600 and renamed into place, so no
   * reader ever sees a partial or wider-moded file.
   */
  async file(instanceId: string): Promise<string> {
    const text = await this.text(instanceId);
    const file = path.join(this.dir, `${instanceId}.key`);
    const current = await fs.readFile(file, 'latin1').catch(() => null);
    if (current === text) {
      const st = await fs.stat(file);
      if ((st.mode & 0o077) === 0) return file;
    }
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.dir, 0o700);
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await fs.writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
      await fs.rename(tmp, file);
    } finally {
      await fs.rm(tmp, { force: true });
    }
    return file;
  }

  /** Removes an instance's key file (its backups stay readable: the key is derived again from the master). */
  async drop(instanceId: string): Promise<void> {
    if (!INSTANCE_ID.test(instanceId)) return;
    await fs.rm(path.join(this.dir, `${instanceId}.key`), { force: true });
  }

  static keyId(instanceId: string): string {
    return instanceKeyId(instanceId);
  }
}

/** The instance keys of a server configuration; undefined when backups are not encrypted. */
export function instanceKeysFor(config: { backupEncryption: boolean; backupKeyFile?: string; stateDir: string }): InstanceKeys | undefined {
  if (!config.backupEncryption) return undefined;
  return new InstanceKeys(config.backupKeyFile ?? path.join(config.stateDir, 'backup.key'), path.join(config.stateDir, 'keys'));
}
