// `couchtrove agent status --couchdb-url URL`: is this CouchDB up, which version, which node.
import { defineCommand } from '../../command.js';
import { couchClient, printJson } from './couch-target.js';
import { describeError } from '../../../util/errors.js';

export const statusCommand = defineCommand({
  path: ['agent', 'status'],
  summary: 'Show whether a CouchDB answers (/_up), its version and node name (exit 1 when it does not answer)',
  required: ['couchdbUrl'],
  optional: ['json'],
  run: async (o, io) => {
    const couch = await couchClient(o.couchdbUrl, io.env);
    const up = await couch.up(5000);
    let info: { version?: string; node?: string; uuid?: string; error?: string } = {};
    if (up) {
      try {
        const root = await couch.info();
        info = { version: root.version, uuid: root.uuid, node: await couch.nodeName() };
      } catch (err) {
        info = { error: describeError(err) };
      }
    }
    if (o.json) printJson(io, { url: couch.baseUrl, up, ...info });
    else if (!up) io.stdout.write(`CouchDB at ${couch.baseUrl}: not answering /_up\n`);
    else if (info.error) io.stdout.write(`CouchDB at ${couch.baseUrl}: up, but ${info.error}\n`);
    else io.stdout.write(`CouchDB ${info.version} at ${couch.baseUrl}: up, node ${info.node}, uuid ${info.uuid ?? '-'}\n`);
    return up && !info.error ? 0 : 1;
  },
});
