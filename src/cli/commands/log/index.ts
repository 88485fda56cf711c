// `couchtrove log list|show|tail|publish|discard INSTANCE [--log NAME]`: Trove's guest log API for
// CouchDB's log (src/tasks/logs.ts). tail reads through the API; the Trove clients read published logs
// from Swift instead.
import { defineCommand, untilStopSignal, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, table, type JsonObject } from '../../../api/client.js';
import { formatBytes } from '../../progress.js';
import { API } from '../api.js';

/** How many of the newest lines each poll of --follow reads, and how often it polls. */
const FOLLOW_WINDOW = 2000;
const FOLLOW_MS = 1000;
const COLS = ['name', 'type', 'status', 'size', 'published', 'pending', 'prefix'];

const readable = (l: JsonObject): JsonObject => ({
  ...l,
  size: typeof l.size === 'number' ? formatBytes(l.size) : l.size,
  published: typeof l.published === 'number' ? formatBytes(l.published) : l.published,
  pending: typeof l.pending === 'number' ? formatBytes(l.pending) : l.pending,
  ...(typeof l.rotated_bytes === 'number' ? { rotated_bytes: formatBytes(l.rotated_bytes) } : {}),
  ...(typeof l.max_bytes === 'number' ? { max_bytes: formatBytes(l.max_bytes) } : {}),
});

function action(verb: 'show' | 'publish' | 'discard', summary: string): AnyCommand {
  return defineCommand({
    path: ['log', verb], summary, required: ['instanceRef'], optional: [...API, 'logName'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const body: JsonObject = { name: o.logName ?? 'couchdb' };
      if (verb !== 'show') body[verb] = 1;
      const l = (await c.request('POST', `/instances/${id}/log`, body)).log as JsonObject;
      print(io, o.json, { log: l }, () => details(readable(l)));
      return 0;
    },
  });
}

export const logCommands: AnyCommand[] = [
  defineCommand({
    path: ['log', 'list'], summary: "List an instance's logs (CouchDB's log): size, published and pending bytes", required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const rows = (await c.get(`/instances/${id}/log`)).logs as JsonObject[];
      print(io, o.json, { logs: rows }, () => table(rows.map(readable), COLS));
      return 0;
    },
  }),
  action('show', 'Show a log: status, size, what was published and where'),
  action('publish', "Copy the log into the backup repository's object storage (logs/INSTANCE/NAME/), as Trove publishes to Swift"),
  action('discard', 'Remove the published copy of the log from the backup repository'),
  defineCommand({
    path: ['log', 'tail'], summary: 'Print the last lines of the log (--lines N, 0 for the whole current file); --follow keeps printing new lines', required: ['instanceRef'], optional: [...API, 'logName', 'tailLines', 'tailFollow'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const read = async (lines: number): Promise<JsonObject> => (await c.get(`/instances/${id}/log/${encodeURIComponent(o.logName ?? 'couchdb')}/tail?lines=${lines}`)).log as JsonObject;
      const tail = async (lines: number): Promise<string> => String((await read(lines)).text);
      if (!o.tailFollow) {
        const r = await read(o.tailLines ?? 50);
        print(io, o.json, { log: r }, () => String(r.text));
        return 0;
      }
      if (o.json) throw Object.assign(new Error('--follow prints lines as they come: it does not go with --json'), { name: 'UsageError' });
      let seen = complete(await tail(o.tailLines ?? 50));
      io.stdout.write(seen.map((l) => `${l}\n`).join(''));
      let stop = false;
      void untilStopSignal().then(() => (stop = true));
      while (!stop) {
        await new Promise((r) => setTimeout(r, FOLLOW_MS));
        if (stop) break;
        const now = complete(await tail(FOLLOW_WINDOW));
        const added = newLines(seen, now);
        io.stdout.write(added.map((l) => `${l}\n`).join(''));
        seen = now;
      }
      return 0;
    },
  }),
];

/** The whole lines of a tail: a last line still being written is read again by the next poll. */
function complete(text: string): string[] {
  const lines = text.split('\n');
  lines.pop();
  return lines;
}

/**
 * The lines of `now` (the newest lines of the log) after those already printed: after the last place where
 * the last lines printed appear in it. The log's own times make lines distinct; a log rotated, or written
 * faster than FOLLOW_WINDOW lines per poll, holds no such place, and all of `now` is new.
 */
export function newLines(before: string[], now: string[]): string[] {
  const anchor = before.slice(-10);
  if (anchor.length === 0) return now;
  for (let j = now.length - anchor.length; j >= 0; j--) {
    if (anchor.every((l, i) => now[j + i] === l)) return now.slice(j + anchor.length);
  }
  return now;
}
