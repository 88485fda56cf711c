// Request body checks: every wrong shape becomes a 400 with a message naming the field.
import type { AccessRole } from '../agent/protocol.js';
import { badRequest } from '../tasks/errors.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Obj = { [k: string]: Json };

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function obj(v: unknown, where: string): Obj {
  if (!isObj(v)) throw badRequest(`${where} must be a JSON object.`);
  return v;
}

export function arr(v: unknown, where: string, max = 100): Json[] {
  if (!Array.isArray(v)) throw badRequest(`${where} must be a list.`);
  if (v.length > max) throw badRequest(`${where}: at most ${max} entries.`);
  return v as Json[];
}

export function optional<T>(v: unknown, f: (v: unknown) => T): T | null {
  return v === undefined || v === null ? null : f(v);
}

/** A display name: 1-255 characters, no control characters. */
export function displayName(v: unknown, where: string): string {
  if (typeof v !== 'string') throw badRequest(`${where} must be a string.`);
  const s = v.trim();
  if (s.length === 0) throw badRequest(`${where} must not be empty.`);
  if (s.length > 255) throw badRequest(`${where} is longer than 255 characters.`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(s)) throw badRequest(`${where} must not contain control characters.`);
  return s;
}

export function text(v: unknown, where: string, max = 1024): string {
  if (typeof v !== 'string') throw badRequest(`${where} must be a string.`);
  if (v.length > max) throw badRequest(`${where} is longer than ${max} characters.`);
  return v;
}

/** A whole number, given as a number or (as some clients do) a numeric string. */
export function integer(v: unknown, where: string, min: number, max: number): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^\s*\d{1,12}\s*$/.test(v)) n = Number(v);
  else throw badRequest(`${where} must be a whole number.`);
  if (!Number.isInteger(n)) throw badRequest(`${where} must be a whole number, got ${n}.`);
  if (n < min || n > max) throw badRequest(`${where} must be between ${min} and ${max}, got ${n}.`);
  return n;
}

/** An id or name reference: a string or number (flavorRef may be a number), 1-255 printable characters. */
export function ref(v: unknown, where: string): string {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return String(v);
  if (typeof v !== 'string' || v.length === 0 || v.length > 255 || !/^[\x21-\x7e]+$/.test(v)) throw badRequest(`${where} must be an id (printable characters, at most 255).`);
  // flavorRef may be a link: take its last path segment, as Trove does.
  const m = /^https?:\/\/.*\/([^/]+)$/.exec(v);
  return m ? m[1]! : v;
}

/** CouchDB database names (https://docs.couchdb.org/en/stable/api/database/common.html). */
export function dbName(v: unknown, where: string): string {
  if (typeof v !== 'string') throw badRequest(`${where} must be a string.`);
  if (!/^[a-z][a-z0-9_$()+/-]{0,237}$/.test(v)) {
    throw badRequest(`${where} ${JSON.stringify(v.slice(0, 80))} is not a valid CouchDB database name: lowercase letter first, then a-z 0-9 _ $ ( ) + - /, at most 238 characters.`);
  }
  return v;
}

/** CouchDB user names: no ':' (it separates name and password in basic auth), no leading '_'. */
export function userName(v: unknown, where: string): string {
  if (typeof v !== 'string') throw badRequest(`${where} must be a string.`);
  // eslint-disable-next-line no-control-regex
  if (v.length === 0 || v.length > 128 || v.startsWith('_') || /[:\u0000-\u001f\u007f/\\%@?#]/.test(v) || v.trim() !== v) {
    throw badRequest(`${where} ${JSON.stringify(v.slice(0, 80))} is not a valid user name: 1-128 characters, not starting with '_', without ':', '/', '\\', '%', '@', '?', '#', spaces at the ends or control characters.`);
  }
  return v;
}

export function password(v: unknown, where: string): string {
  if (typeof v !== 'string') throw badRequest(`${where} must be a string.`);
  if (v.length < 1 || v.length > 1024) throw badRequest(`${where} must be 1 to 1024 characters.`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000]/.test(v)) throw badRequest(`${where} must not contain NUL.`);
  return v;
}

export function dbList(v: unknown, where: string): string[] {
  const names = arr(v, where).map((d, i) => dbName(obj(d, `${where}[${i}]`).name, `${where}[${i}].name`));
  return [...new Set(names)];
}

/**
 * A list of {"name", "role"?}: every database once, and those where the user is database admin. An entry's
 * "role" wins over `all` (a call-wide role); neither means member, as Trove's bodies carry no role.
 */
export function accessList(v: unknown, where: string, all?: unknown): { databases: string[]; adminOf: string[] } {
  const roleOf = (x: unknown, at: string): AccessRole | undefined => {
    if (x === undefined || x === null) return undefined;
    if (x !== 'admin' && x !== 'member') throw badRequest(`${at} must be "admin" or "member".`);
    return x;
  };
  const fallback = roleOf(all, '"role"') ?? 'member';
  const roles = new Map<string, AccessRole>();
  arr(v, where).forEach((d, i) => {
    const o = obj(d, `${where}[${i}]`);
    roles.set(dbName(o.name, `${where}[${i}].name`), roleOf(o.role, `${where}[${i}].role`) ?? fallback);
  });
  return { databases: [...roles.keys()], adminOf: [...roles].filter(([, r]) => r === 'admin').map(([n]) => n) };
}

export function noUnknown(o: Obj, allowed: string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw badRequest(`${where}: unknown field ${JSON.stringify(k.slice(0, 80))} (expected ${allowed.join(', ')}).`);
}
