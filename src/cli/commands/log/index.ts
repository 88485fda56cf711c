// `couchtrove log list|show|tail|publish|discard INSTANCE [--log NAME]`: Trove's guest log API for
// CouchDB's log (src/tasks/logs.ts). tail reads through the API; the Trove clients read published logs
// from Swift instead.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, table, type JsonObject } from '../../../api/client.js';
import { formatBytes } from '../../progress.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;
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
    path: ['log', 'tail'], summary: 'Print the last lines of the log (--lines N, 0 for the whole current file)', required: ['instanceRef'], optional: [...API, 'logName', 'tailLines'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r = (await c.get(`/instances/${id}/log/${encodeURIComponent(o.logName ?? 'couchdb')}/tail?lines=${o.tailLines ?? 50}`)).log as JsonObject;
      print(io, o.json, { log: r }, () => String(r.text));
      return 0;
    },
  }),
];
