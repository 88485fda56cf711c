// The server's and the agent's logger (pino): JSON lines (level, time, msg, and request, instance and
// task ids where known) when stderr is not a terminal, one readable line per entry on a terminal.
// Secrets never reach it: request logs carry method, route, URL and status, never headers or bodies,
// and the redaction paths below catch credentials should a caller pass them anyway.
import { pino, type Logger, type DestinationStream } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Paths pino replaces with "[redacted]": credentials in headers and bodies, wherever a caller put them. */
export const REDACT = [
  'headers.authorization', 'headers["x-auth-token"]', 'headers["x-auth-key"]', 'headers.cookie',
  'req.headers.authorization', 'req.headers["x-auth-token"]', 'req.headers["x-auth-key"]', 'req.headers.cookie',
  'password', '*.password', '*.*.password', 'root_password', '*.root_password', 'token', '*.token',
];

export interface LoggerOptions {
  /** 'server' or 'agent': in every line as `name`. */
  name: string;
  level?: LogLevel;
  /** Where lines go (default stderr); text when it is a terminal, JSON lines otherwise. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Fields in every line (e.g. instance_id for an agent). */
  base?: Record<string, unknown>;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/** One JSON line as a person reads it: time, level, message, then the other fields as key=value. */
export function textLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const extra = Object.entries(o).filter(([k]) => !SKIP.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const time = typeof o.time === 'string' ? o.time : new Date(Number(o.time)).toISOString();
  return `${time} ${(LEVEL_NAMES[Number(o.level)] ?? String(o.level)).padEnd(5)} ${String(o.msg ?? '')}${extra.length ? `  ${extra.join(' ')}` : ''}\n`;
}

export function makeLogger(o: LoggerOptions): Logger {
  const out = o.stream ?? process.stderr;
  const dest: DestinationStream = out.isTTY
    ? { write: (line: string) => void out.write(textLine(line)) }
    : { write: (line: string) => void out.write(line) };
  return pino({
    name: o.name,
    level: o.level ?? 'info',
    base: { name: o.name, ...(o.base ?? {}) },
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    redact: { paths: REDACT, censor: '[redacted]' },
    formatters: { level: (_label, number) => ({ level: number }) },
  }, dest);
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const INSTANCE = new RegExp(`\\binstances? (${UUID})`, 'i');
const TASK = new RegExp(`\\btask (${UUID})`, 'i');
const BACKUP = new RegExp(`\\bbackups? (${UUID})`, 'i');

/**
 * The product's `log(line)` callbacks on a pino logger: the level from the line's form ("WARNING: ..." is
 * warn, "... FAILED ..." or "internal error" is error, `debug` for the lines the caller marks as polling),
 * and the instance, task and backup ids the line names as fields, so JSON logs can be filtered by them.
 */
export function lineLogger(logger: Logger, isDebug: (line: string) => boolean = () => false, known: () => Record<string, string> = () => ({})): (line: string) => void {
  return (line: string) => {
    const fields: Record<string, string> = { ...known() };
    const i = INSTANCE.exec(line);
    if (i) fields.instance_id = i[1]!;
    const t = TASK.exec(line);
    if (t) fields.task_id = t[1]!;
    const b = BACKUP.exec(line);
    if (b) fields.backup_id = b[1]!;
    if (/^WARNING: /.test(line)) logger.warn(fields, line.slice(9));
    else if (/\bFAILED\b|^internal error|: Internal error/.test(line)) logger.error(fields, line);
    else if (isDebug(line)) logger.debug(fields, line);
    else logger.info(fields, line);
  };
}
