// Key handling. The key file's bytes are the input keying material. A file that may hold a passphrase is
// stretched with scrypt (random salt, new for every full backup, shared by its incrementals) into a
// master key; a key written by `keygen` (KEY_PREFIX + 32 random bytes) is used as the master directly,
// as age does for its keys: stretching 256 random bits adds nothing but ~90 ms to every run. HKDF with
// the backup's own random salt then derives one subkey per purpose (data records, catalog, manifest
// seal). Nothing derived from the key is stored except what AEAD/HMAC outputs need.
import { createHmac, hkdfSync, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { promisify } from 'node:util';
import { CouchtroveError } from '../util/errors.js';

const scrypt = promisify(scryptCb) as (pw: Buffer, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

export const MIN_KEY_BYTES = 32;
/** What `keygen` writes: this prefix, then 32 random bytes in base64. */
export const KEY_PREFIX = 'couchtrove-key-v1:';
const GENERATED_KEY = new RegExp(`^${KEY_PREFIX}[A-Za-z0-9+/]{43}=$`);

/** The bytes of a key file, kept in memory only. */
export class KeyMaterial {
  readonly #bytes: Buffer;
  /** A key written by `keygen`: full entropy, so it needs no stretching. */
  readonly generated: boolean;
  /** scrypt outputs by salt: an incremental chain shares its full backup's salt, so it pays for one. */
  readonly #masters = new Map<string, Promise<Buffer>>();
  constructor(bytes: Buffer) {
    if (bytes.length < MIN_KEY_BYTES) throw new CouchtroveError(`encryption key is too short: at least ${MIN_KEY_BYTES} bytes are required`);
    this.#bytes = Buffer.from(bytes);
    this.generated = GENERATED_KEY.test(this.#bytes.toString('latin1'));
  }
  toJSON(): string {
    return '[key]';
  }
  /** @internal */
  master(params: KdfParams): Promise<Buffer> {
    if (params.name === 'none') return Promise.resolve(this.#bytes);
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

/** A new key file: KEY_PREFIX and 32 random bytes in base64, mode 0600. */
export async function writeNewKeyFile(file: string): Promise<void> {
  await fs.writeFile(file, `${KEY_PREFIX}${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
}

/** scrypt for a key file that may hold a passphrase; none for a generated key. */
export type KdfParams =
  | {
      name: 'scrypt';
      N: number;
      r: number;
      p: number;
      /** base64 */
      salt: string;
    }
  | { name: 'none' };

export function newKdfParams(key: KeyMaterial): KdfParams {
  return key.generated ? { name: 'none' } : { name: 'scrypt', N: 1 << 15, r: 8, p: 1, salt: randomBytes(32).toString('base64') };
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
  // A backup made with a generated key was never stretched; any other key file cannot be its key.
  if (params.name === 'none' && !key.generated) throw new CouchtroveError('wrong key or corrupted data: this backup was made with a key from `couchtrove agent keygen`');
  if (params.name !== 'none' && (params.name !== 'scrypt' || params.N > 1 << 20 || params.r > 32 || params.p > 16)) {
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
