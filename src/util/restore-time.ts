// Restore times as people type them (issue 23): "latest" or "now" (the newest restore point), an ISO 8601
// time with a zone, or a date and time without one, which is UTC. One parser for the API and the CLI, so
// both accept and refuse the same forms and name them the same way.

/** The accepted forms, for error messages and help. */
export const RESTORE_TIME_FORMS =
  '"latest" or "now" (the newest restore point), "2026-12-07 04:01:49" or "2026-12-07T04:01:49" (no zone: UTC), "2026-12-07T04:01:49Z", "2026-12-07T05:01:49+01:00"';

export type RestoreTime =
  | { latest: true }
  /** ms since the epoch; utcAssumed when the text named no zone. */
  | { latest: false; ms: number; utcAssumed: boolean };

const FORM = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(\.\d{1,9})?)?\s*(Z|UTC|[+-]\d\d(?::?\d\d)?)?$/i;

/** The time, or null when the text is none of RESTORE_TIME_FORMS (or names a day or hour that does not exist). */
export function parseRestoreTime(raw: string): RestoreTime | null {
  const s = raw.trim();
  if (/^(latest|now)$/i.test(s)) return { latest: true };
  const m = FORM.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? '0'].map(Number) as [number, number, number, number, number, number];
  const ms = m[7] ? Math.floor(Number(m[7]) * 1000) : 0;
  const utc = Date.UTC(y, mo - 1, d, h, mi, sec, ms);
  const check = new Date(utc);
  // Date.UTC rolls 2026-02-30 over into March: such a day is refused, not moved.
  if (check.getUTCFullYear() !== y || check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== d || h > 23 || mi > 59 || sec > 59) return null;
  const zone = m[8];
  if (!zone || /^(z|utc)$/i.test(zone)) return { latest: false, ms: utc, utcAssumed: !zone };
  const z = /^([+-])(\d\d):?(\d\d)?$/.exec(zone)!;
  const offset = (Number(z[2]) * 60 + Number(z[3] ?? 0)) * (z[1] === '-' ? -1 : 1);
  if (Number(z[2]) > 23 || Number(z[3] ?? 0) > 59) return null;
  return { latest: false, ms: utc - offset * 60_000, utcAssumed: false };
}
