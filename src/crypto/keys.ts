// Key handling. The key file's bytes are the input keying material; scrypt with a random salt (new for
// every full backup, shared by its incrementals) turns it into a master key, and HKDF with the backup's
// own random salt derives one subkey per purpose (data records, catalog, manifest seal). Nothing derived
// from the key is stored except what AEAD/HMAC outputs need.
import { createHmac, hkdfSync, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { promisify } from 'node:util';
import { CouchtroveError } from '../util/errors.js';

const scrypt = promisify(scryptCb) as (pw: Buffer, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

export const MIN_KEY_BYTES = 32;

/** The bytes of a key file, kept in memory only. */
export class KeyMaterial {
  readonly #bytes: Buffer;
  /** scrypt outputs by salt: an incremental chain shares its full backup's salt, so it pays for one. */
  readonly #masters = new Map<string, Promise<Buffer>>();
  constructor(bytes: Buffer) {
    if (bytes.length < MIN_KEY_BYTES) throw new CouchtroveError(`encryption key is too short: at least ${MIN_KEY_BYTES} bytes are required`);
    this.#bytes = Buffer.from(bytes);
  }
  toJSON(): string {
    return '[key]';
  }
  /** @internal */
  master(params: KdfParams): Promise<Buffer> {
    const id = `${params.N}:${params.r}:${params.p}:${params.salt}`;
    let m = this.#masters.get(id);
    if (!m) {
      m = scrypt(this.#bytes, Buffer.from(params.salt, 'base64'), 32, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + (1 << 20) });
      this.#masters.set(id, m);
    }
    return m;
  }
}

export async function readKeyFile(file: string): Promise<KeyMaterial> {
  let raw: Buffer;
  try {
    raw = await fs.readFile(file);
  } catch (err) {
    throw new CouchtroveError(`cannot read key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // A trailing newline from an editor or `echo` is not part of the key.
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  if (end < MIN_KEY_BYTES) throw new CouchtroveError(`key file ${file} is too short: at least ${MIN_KEY_BYTES} bytes are required (couchtrove agent keygen makes one)`);
  return new KeyMaterial(raw.subarray(0, end));
}

/** A new key file: 32 random bytes, base64 (44 characters), mode 0600. */
export async function writeNewKeyFile(file: string): Promise<void> {
  await fs.writeFile(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
}

export interface KdfParams {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  /** base64 */
  salt: string;
}

export function newKdfParams(): KdfParams {
  return { name: 'scrypt', N: 1 << 15, r: 8, p: 1, salt: randomBytes(32).toString('base64') };
}

export interface BackupKeys {
  data: Buffer;
  catalog: Buffer;
  seal: Buffer;
}

/** A backup's own salt for its subkeys: with it, backups that share a master key never share a subkey. */
export function newKeySalt(): string {
  return randomBytes(32).toString('base64');
}

export async function deriveKeys(key: KeyMaterial, params: KdfParams, keySalt: string): Promise<BackupKeys> {
  if (params.name !== 'scrypt' || params.N > 1 << 20 || params.r > 32 || params.p > 16) {
    throw new CouchtroveError(`unsupported key derivation parameters in manifest`);
  }
  const master = await key.master(params);
  const salt = Buffer.from(keySalt, 'base64');
  const sub = (info: string) => Buffer.from(hkdfSync('sha256', master, salt, `couchtrove/v1/${info}`, 32));
  return { data: sub('data'), catalog: sub('catalog'), seal: sub('manifest-seal') };
}

export function hmac(key: Buffer, data: string): string {
  return createHmac('sha256', key).update(data).digest('hex');
}

export function equalHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
