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

/** Key ids recorded in manifests (`encryption.keyId`): `instance:<instance id>`. */
export const KEY_ID = /^[a-z]{1,16}:[A-Za-z0-9._-]{1,128}$/;
export function instanceKeyId(instanceId: string): string {
  return `instance:${instanceId}`;
}

/** The bytes of a key file, kept in memory only. */
export class KeyMaterial {
  readonly #bytes: Buffer;
  /** A key written by `keygen`: full entropy, so it needs no stretching. */
  readonly generated: boolean;
  /** What backups written with this key record as `encryption.keyId` (undefined: the master key, recorded as nothing). */
  readonly id: string | undefined;
  /** scrypt outputs by salt: an incremental chain shares its full backup's salt, so it pays for one. */
  readonly #masters = new Map<string, Promise<Buffer>>();
  constructor(bytes: Buffer, id?: string) {
    if (bytes.length < MIN_KEY_BYTES) throw new CouchtroveError(`encryption key is too short: at least ${MIN_KEY_BYTES} bytes are required`);
    if (id !== undefined && !KEY_ID.test(id)) throw new CouchtroveError(`invalid key id ${JSON.stringify(id)}`);
    this.#bytes = Buffer.from(bytes);
    this.generated = GENERATED_KEY.test(this.#bytes.toString('latin1'));
    this.id = id;
  }
  toJSON(): string {
    return '[key]';
  }
  /**
   * The key a manifest's `encryption.keyId` names. A single key is what it is (a wrong one fails the seal
   * check); a KeyRing derives the one named.
   */
  forKeyId(_keyId: string | undefined): Promise<KeyMaterial> {
    return Promise.resolve(this);
  }
  /**
   * The instance key of `instanceId`, derived from this key as the master: HKDF-SHA256 with info
   * "couchtrove/instance-key/v1:<id>" over the master's bytes, or, for a master that is not a generated key
   * (it may be a passphrase), over its scrypt stretch (fixed salt: the derivation must be reproducible).
   * The result is a generated key (KEY_PREFIX + base64), so its backups need no scrypt.
   */
  async deriveInstanceKey(instanceId: string): Promise<KeyMaterial> {
    const ikm = this.generated ? this.#bytes : await this.master(INSTANCE_KEY_STRETCH);
    const bytes = Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), `couchtrove/instance-key/v1:${instanceId}`, 32));
    return new KeyMaterial(Buffer.from(`${KEY_PREFIX}${bytes.toString('base64')}`, 'latin1'), instanceKeyId(instanceId));
  }
  /** @internal: a KeyRing keeps its master's bytes. */
  exportBytes(): Buffer {
    return Buffer.from(this.#bytes);
  }
  /** @internal */
  master(params: KdfParams): Promise<Buffer> {
    if (params.name === 'none') return Promise.resolve(this.#bytes);
    checkKdfParams(params, 'key derivation');
    const id = `${params.N}:${params.r}:${params.p}:${params.salt}`;
    let m = this.#masters.get(id);
    if (!m) {
      m = scrypt(this.#bytes, Buffer.from(params.salt, 'base64'), 32, { N: params.N, r: params.r, p: params.p, maxmem: scryptMemory(params) + (1 << 20) });
      this.#masters.set(id, m);
    }
    return m;
  }
}

/**
 * The control plane's keys: the master key file, and every instance key derived from it on demand, chosen
 * by the key id a manifest records (none: the master, as for backups written before per-instance keys).
 */
export class KeyRing extends KeyMaterial {
  readonly #master: KeyMaterial;
  readonly #derived = new Map<string, Promise<KeyMaterial>>();
  constructor(master: KeyMaterial) {
    super(master.exportBytes());
    this.#master = master;
  }
  override forKeyId(keyId: string | undefined): Promise<KeyMaterial> {
    if (keyId === undefined) return Promise.resolve(this.#master);
    const m = /^instance:([A-Za-z0-9._-]{1,128})$/.exec(keyId);
    if (!m) return Promise.reject(new CouchtroveError(`unknown key id ${JSON.stringify(keyId)}`));
    let k = this.#derived.get(m[1]!);
    if (!k) this.#derived.set(m[1]!, (k = this.#master.deriveInstanceKey(m[1]!)));
    return k;
  }
  override deriveInstanceKey(instanceId: string): Promise<KeyMaterial> {
    return this.forKeyId(instanceKeyId(instanceId));
  }
}

/** The fixed stretch of a passphrase master before instance keys are derived from it. */
const INSTANCE_KEY_STRETCH: KdfParams = { name: 'scrypt', N: 1 << 15, r: 8, p: 1, salt: Buffer.from('couchtrove/instance-key/v1').toString('base64') };

/**
 * Reads a key file. Like ssh with a private key, a file that group or others may read or write is
 * refused: anyone who can read it can decrypt every backup, and anyone who can write it can swap the key.
 */
export async function readKeyFile(file: string, id?: string): Promise<KeyMaterial> {
  let raw: Buffer;
  let handle: fs.FileHandle | undefined;
  try {
    // The mode is checked on the descriptor that is read, so a file swapped in between is not read.
    handle = await fs.open(file, 'r');
    const st = await handle.stat();
    if (!st.isFile()) throw new CouchtroveError(`key file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new CouchtroveError(`key file ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: it must not be readable or writable by group or others (chmod 600 ${file})`);
    }
    raw = await handle.readFile();
  } catch (err) {
    if (err instanceof CouchtroveError) throw err;
    throw new CouchtroveError(`cannot read key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  } finally {
    await handle?.close();
  }
  // A trailing newline from an editor or `echo` is not part of the key.
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  if (end < MIN_KEY_BYTES) throw new CouchtroveError(`key file ${file} is too short: at least ${MIN_KEY_BYTES} bytes are required (couchtrove agent keygen makes one)`);
  return new KeyMaterial(raw.subarray(0, end), id);
}

/** The key a command reads backups with: the key file, or with `master` the ring it is the master of. */
export async function readingKey(file: string | undefined, master: boolean | undefined): Promise<KeyMaterial | undefined> {
  if (!file) {
    if (master) throw new CouchtroveError('--master-key needs --key-file');
    return undefined;
  }
  const k = await readKeyFile(file);
  return master ? new KeyRing(k) : k;
}

/** The text of a key file holding this key (a generated key's form), for writing it where an agent reads it. */
export function keyFileText(key: KeyMaterial): string {
  if (!key.generated) throw new CouchtroveError('only a generated key can be written as a key file');
  return `${key.exportBytes().toString('latin1')}\n`;
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

/**
 * Bounds on the scrypt parameters a manifest may ask for. They are read before the manifest can be
 * authenticated (its seal key is derived with them), so whoever can write to the repository chooses
 * them: unbounded, one manifest cost 4.26 GB and more than 60 s. The default (N=2^15, r=8, p=1) needs
 * 32 MiB and ~90 ms; the bounds allow 8 times its memory and its work (128·N·r·p; ~0.7 s).
 */
export const SCRYPT_LIMITS = { maxN: 1 << 20, maxR: 32, maxP: 16, maxMemory: 256 << 20, maxWork: 256 << 20, maxSaltBytes: 1024 };

/** Bytes scrypt allocates for these parameters (128·N·r). */
function scryptMemory(params: { N: number; r: number }): number {
  return 128 * params.N * params.r;
}

/**
 * Checks kdf parameters (as read from a manifest: any JSON) before any work is done with them; the error
 * names the parameter. `where` says whose parameters they are, e.g. "manifest of backup X".
 */
export function checkKdfParams(params: unknown, where: string): KdfParams {
  const bad = (what: string) => new CouchtroveError(`${where}: ${what}`);
  if (!params || typeof params !== 'object') throw bad('key derivation parameters missing');
  const p = params as Record<string, unknown>;
  if (p.name === 'none') return { name: 'none' };
  if (p.name !== 'scrypt') throw bad(`unsupported key derivation ${JSON.stringify(p.name)}`);
  const L = SCRYPT_LIMITS;
  const int = (name: 'N' | 'r' | 'p', min: number, max: number): number => {
    const v = p[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(`scrypt parameter ${name} = ${JSON.stringify(v)} is out of bounds (${min} to ${max})`);
    return v;
  };
  const N = int('N', 2, L.maxN);
  if ((N & (N - 1)) !== 0) throw bad(`scrypt parameter N = ${N} is not a power of 2`);
  const r = int('r', 1, L.maxR);
  const pp = int('p', 1, L.maxP);
  const memory = scryptMemory({ N, r });
  if (memory > L.maxMemory) throw bad(`scrypt parameters N = ${N}, r = ${r} need ${memory / (1 << 20)} MiB, more than the ${L.maxMemory / (1 << 20)} MiB allowed`);
  if (memory * pp > L.maxWork) throw bad(`scrypt parameters N = ${N}, r = ${r}, p = ${pp} ask for ${(memory * pp) / (1 << 20)} MiB of work, more than the ${L.maxWork / (1 << 20)} MiB allowed`);
  if (typeof p.salt !== 'string' || p.salt.length === 0 || p.salt.length > L.maxSaltBytes * 2) throw bad('scrypt parameter salt is missing or too long');
  return { name: 'scrypt', N, r, p: pp, salt: p.salt };
}

export async function deriveKeys(given: KeyMaterial, params: KdfParams, keySalt: string, keyId?: string): Promise<BackupKeys> {
  const key = await given.forKeyId(keyId);
  // A backup made with a generated key was never stretched; any other key file cannot be its key.
  if (params.name === 'none' && !key.generated) throw new CouchtroveError('wrong key or corrupted data: this backup was made with a key from `couchtrove agent keygen`');
  checkKdfParams(params, 'key derivation');
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
