// What an entry of the option catalogue (catalogue.ts) is, and the parsers entries use. Each entry
// drives the CLI flag (cli/command.ts), validation with a clear error, the environment variable
// where there is one, and the generated reference docs/options.md.
// Option files (options/*.ts) import from here, not from catalogue.ts, which imports them.
import * as path from 'node:path';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface OptionSpec<T> {
  /** Long flag without dashes, e.g. 'data-dir'. */
  flag: string;
  /** Placeholder for the value; absent for a boolean switch. */
  arg?: string;
  description: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  /** Default, as the user would type it (also shown in help and docs). */
  default?: string;
  /** Turns the raw text into a value; throws UsageError naming the problem. */
  parse: (raw: string, flag: string) => T;
  /** Reference section in docs/options.md. */
  group: string;
}

const fail = (flag: string, msg: string): never => {
  throw new UsageError(`--${flag}: ${msg}`);
};

export const parsers = {
  string: (raw: string, flag: string): string => (raw === '' ? fail(flag, 'must not be empty') : raw),
  absolutePath: (raw: string, flag: string): string => {
    if (raw === '') fail(flag, 'must not be empty');
    return path.resolve(raw);
  },
  integer:
    (min: number, max: number) =>
    (raw: string, flag: string): number => {
      if (!/^-?\d+$/.test(raw)) fail(flag, `expected a whole number, got ${JSON.stringify(raw)}`);
      const n = Number(raw);
      if (n < min || n > max) fail(flag, `must be between ${min} and ${max}, got ${n}`);
      return n;
    },
  oneOf:
    <T extends string>(...values: T[]) =>
    (raw: string, flag: string): T =>
      (values as string[]).includes(raw) ? (raw as T) : fail(flag, `expected one of ${values.join(', ')}, got ${JSON.stringify(raw)}`),
  boolean: (): boolean => true,
  url: (raw: string, flag: string): string => {
    try {
      const u = new URL(raw);
      if (u.username || u.password) fail(flag, 'credentials must not be given in the URL (they would show in process listings); use the environment');
      return raw;
    } catch (err) {
      if (err instanceof UsageError) throw err;
      return fail(flag, `not a valid URL: ${JSON.stringify(raw)}`);
    }
  },
  backupId: (raw: string, flag: string): string =>
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(raw) ? raw : fail(flag, `invalid backup id ${JSON.stringify(raw)} (letters, digits, '.', '_', '-'; at most 128)`),
  /** A resource's name or id through the API: names may hold spaces ("minutely 2026-12-07T04:04Z"), as the API allows. */
  ref: (raw: string, flag: string): string => {
    // eslint-disable-next-line no-control-regex
    if (raw.length === 0 || raw.length > 255 || /[\u0000-\u001f\u007f]/.test(raw)) fail(flag, `expected a name or id of 1 to 255 printable characters, got ${JSON.stringify(raw)}`);
    return raw;
  },
  owner: (raw: string, flag: string): string => (/^[^:\s]+:[^:\s]+$/.test(raw) ? raw : fail(flag, `expected USER:GROUP, got ${JSON.stringify(raw)}`)),
  /** A size such as 64MiB, 1GiB, 5000000. */
  bytes: (raw: string, flag: string): number => {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T)?$/i.exec(raw);
    if (!m) return fail(flag, `expected a size such as 64MiB or 1GiB, got ${JSON.stringify(raw)}`);
    const unit = (m[2] ?? 'B').toUpperCase().replace('IB', '');
    const mult = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[unit] ?? 1;
    return Number(m[1]) * mult;
  },
};

export const CODECS = ['zstd', 'gzip', 'none'] as const;
export type Codec = (typeof CODECS)[number];

