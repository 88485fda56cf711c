// Records: the unit of the data stream (docs/backup-format.md, "Records").
//   header  = u32 BE payload length | u32 BE plain-text length          (8 bytes)
//   payload = compressed bytes, or AES-256-GCM(compressed) || 16-byte tag when encrypted
// The GCM nonce is 4 zero bytes then the record's u64 BE index in its object, and the header is the
// additional data, so records cannot be altered, moved or swapped without failing authentication.
// Plain text is read into and decoded into caller-owned buffers that are reused, so memory stays
// flat however much data passes (allocation churn of multi-MiB buffers otherwise grows the heap).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Codec } from '../config/catalogue.js';

type ZstdBinding = typeof import('zstd-napi/binding.js');
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as ZstdBinding;

export const HEADER_BYTES = 8;
export const TAG_BYTES = 16;
export const DEFAULT_RECORD_SIZE = 2 * 1024 * 1024;
export const MAX_RECORD_SIZE = 64 * 1024 * 1024;

export class RecordAuthError extends Error {}
export class RecordCorruptError extends Error {}

/** Bytes a record of `plain` plain-text bytes can take at most, header and tag included. */
export function maxRecordBytes(plain: number): number {
  return HEADER_BYTES + Math.max(zstd.compressBound(plain), plain + (plain >> 8) + 1024) + TAG_BYTES;
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

// One compression and one decompression context per thread, reused for every record.
let cctx: InstanceType<ZstdBinding['CCtx']> | undefined;
let dctx: InstanceType<ZstdBinding['DCtx']> | undefined;

// Per-thread scratch, grown as needed and reused: compressed bytes before they are sealed, opened bytes
// before they are decompressed.
let compressed = new Uint8Array(0);
let opened = new Uint8Array(0);

/**
 * Encodes `plain` as one record, into `into` when given (it must hold maxRecordBytes(plain.length)),
 * else into a buffer of its own.
 */
export function encodeRecord(codec: Codec, level: number, key: Uint8Array | null, index: number, plain: Uint8Array, into?: Uint8Array): Buffer {
  let packed: Uint8Array;
  if (codec === 'zstd') {
    const need = maxRecordBytes(plain.length);
    if (compressed.length < need) compressed = new Uint8Array(need);
    cctx ??= new zstd.CCtx();
    packed = compressed.subarray(0, cctx.compress(compressed, plain, level));
  } else {
    packed = codec === 'gzip' ? gzipSync(plain, { level }) : plain;
  }
  const payloadLength = packed.length + (key ? TAG_BYTES : 0);
  const out = into ? Buffer.from(into.buffer, into.byteOffset, HEADER_BYTES + payloadLength) : Buffer.allocUnsafeSlow(HEADER_BYTES + payloadLength);
  out.writeUInt32BE(payloadLength, 0);
  out.writeUInt32BE(plain.length, 4);
  if (!key) {
    out.set(packed, HEADER_BYTES);
    return out;
  }
  const cipher = createCipheriv('aes-256-gcm', key, nonce(index));
  cipher.setAAD(out.subarray(0, HEADER_BYTES));
  const end = throughCipher(cipher, packed, out, HEADER_BYTES);
  cipher.final();
  out.set(cipher.getAuthTag(), end);
  return out;
}

// update() returns a new buffer each call. For a whole record that is a fresh multi-MiB allocation: in a
// worker it piles up in that thread's malloc arena (with lent output buffers, this took a backup's peak
// RSS from 182-195 to 133-136 MiB), and its pages fault in as they are filled (GCM at 1-2 GB/s that way,
// ~2.9 GB/s in 64 KiB pieces, which the allocator recycles; measured on 700 KiB records).
const CIPHER_PIECE = 64 << 10;

/** Runs `input` through the cipher piece by piece into `out` at `at`; returns where the output ends. */
function throughCipher(cipher: { update(data: Uint8Array): Buffer }, input: Uint8Array, out: Uint8Array, at: number): number {
  for (let i = 0; i < input.length; i += CIPHER_PIECE) {
    const piece = cipher.update(input.subarray(i, i + CIPHER_PIECE));
    out.set(piece, at);
    at += piece.length;
  }
  return at;
}

export function parseHeader(header: Uint8Array): { payloadLength: number; plainLength: number } {
  const b = Buffer.from(header.buffer, header.byteOffset, header.byteLength);
  return { payloadLength: b.readUInt32BE(0), plainLength: b.readUInt32BE(4) };
}

/** Decodes one record into `out` (which must hold the plain length); returns the plain length. */
export function decodeRecordInto(codec: Codec, key: Uint8Array | null, index: number, header: Uint8Array, payload: Uint8Array, out: Uint8Array): number {
  const { plainLength } = parseHeader(header);
  if (plainLength > out.length) throw new RecordCorruptError(`record claims ${plainLength} bytes, more than a record of this backup holds`);
  let packed: Uint8Array = payload;
  if (key) {
    if (payload.length < TAG_BYTES) throw new RecordAuthError('record too short for its authentication tag');
    const decipher = createDecipheriv('aes-256-gcm', key, nonce(index));
    decipher.setAAD(header);
    decipher.setAuthTag(payload.subarray(payload.length - TAG_BYTES));
    const sealed = payload.subarray(0, payload.length - TAG_BYTES);
    if (opened.length < sealed.length) opened = new Uint8Array(sealed.length);
    try {
      packed = opened.subarray(0, throughCipher(decipher, sealed, opened, 0));
      decipher.final();
    } catch {
      throw new RecordAuthError('authentication failed');
    }
  }
  let n: number;
  try {
    if (codec === 'zstd') {
      dctx ??= new zstd.DCtx();
      n = dctx.decompress(out.subarray(0, plainLength), packed);
    } else {
      const plain = codec === 'gzip' ? gunzipSync(packed, { maxOutputLength: Math.max(plainLength, 1) }) : packed;
      if (plain.length > plainLength) throw new Error('longer than the header says');
      out.set(plain, 0);
      n = plain.length;
    }
  } catch (err) {
    throw new RecordCorruptError(`cannot decompress: ${(err as Error).message}`);
  }
  if (n !== plainLength) throw new RecordCorruptError(`decoded ${n} bytes, header says ${plainLength}`);
  return n;
}

export function decodeRecord(codec: Codec, key: Uint8Array | null, index: number, header: Uint8Array, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(parseHeader(header).plainLength);
  decodeRecordInto(codec, key, index, header, payload, out);
  return out;
}

export const DEFAULT_LEVEL: Record<Codec, number> = { zstd: 1, gzip: 6, none: 0 };

export function checkLevel(codec: Codec, level: number): void {
  const [min, max] = codec === 'zstd' ? [1, 19] : codec === 'gzip' ? [1, 9] : [0, 0];
  if (!Number.isInteger(level) || level < min || level > max) throw new RangeError(`compression level ${level} is out of range for ${codec} (${min}-${max})`);
}
