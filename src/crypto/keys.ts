// Key handling. The key file's bytes are the input keying material; per backup, a random salt and
// scrypt turn it into a master key, and HKDF derives one subkey per purpose (data records, catalog,
// manifest seal). Nothing derived from the key is stored except what AEAD/HMAC outputs need.
import { createHmac, hkdfSync, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { promisify } from 'node:util';
import { CouchtroveError } from '../util/errors.js';

const scrypt = promisify(scryptCb) as (pw: Buffer, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

export const MIN_KEY_BYTES = 32;

/** The bytes of a key file, kept in memory only. */
export class KeyMaterial {
  readonly #bytes: Buffer;
  constructor(bytes: Buffer) {
    if (bytes.length < MIN_KEY_BYTES) throw new CouchtroveError(`encryption key is too short: at least ${MIN_KEY_BYTES} bytes are required`);
    this.#bytes = Buffer.from(bytes);
  }
  /** @internal */
  bytes(): Buffer {
    return this.#bytes;
  }
  toJSON(): string {
    return '[key]';
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

export async function deriveKeys(key: KeyMaterial, params: KdfParams): Promise<BackupKeys> {
  if (params.name !== 'scrypt' || params.N > 1 << 20 || params.r > 32 || params.p > 16) {
    throw new CouchtroveError(`unsupported key derivation parameters in manifest`);
  }
  const master = await scrypt(key.bytes(), Buffer.from(params.salt, 'base64'), 32, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + (1 << 20) });
  const sub = (info: string) => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `couchtrove/v1/${info}`, 32));
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
