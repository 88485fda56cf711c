// `couchtrove root enable|show|disable INSTANCE` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, label, print, type JsonObject } from '../../../api/client.js';
import { API } from '../api.js';

export const rootCommands: AnyCommand[] = [
  defineCommand({
    path: ['root', 'enable'], summary: 'Enable the root (server admin) user and print its password', required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r = (await c.request('POST', `/instances/${id}/root`)).user as JsonObject;
      print(io, o.json, { user: r }, () => details(r));
      return 0;
    },
  }),
  defineCommand({
    path: ['root', 'show'], summary: 'Whether root is enabled, and since when', required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const r = await c.get(`/instances/${inst.id}/root`);
      const state = r.rootEnabled !== true ? 'not enabled' : r.root_enabled_at ? `enabled since ${String(r.root_enabled_at)}` : 'enabled';
      print(io, o.json, r, () => `root is ${state} on ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['root', 'disable'], summary: 'Disable the root user', required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('DELETE', `/instances/${inst.id}/root`);
      print(io, o.json, { rootEnabled: false }, () => `root is disabled on ${label(inst)}\n`);
      return 0;
    },
  }),
];
