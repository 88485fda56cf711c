// `couchtrove root enable|show|disable` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, type JsonObject } from '../../../api/client.js';

const API = ['apiUrl', 'apiToken', 'apiProject', 'json'] as const;

export const rootCommands: AnyCommand[] = [
  defineCommand({
    path: ['root', 'enable'], summary: 'Enable the root (server admin) user and print its password', required: ['instanceRef'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r = (await c.request('POST', `/instances/${id}/root`)).user as JsonObject;
      print(io, o.json, { user: r }, () => details(r));
      return 0;
    },
  }),
  defineCommand({
    path: ['root', 'show'], summary: 'Whether root is enabled', required: ['instanceRef'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      const r = await c.get(`/instances/${id}/root`);
      print(io, o.json, r, () => `rootEnabled  ${String(r.rootEnabled)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['root', 'disable'], summary: 'Disable the root user', required: ['instanceRef'], optional: [...API],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('DELETE', `/instances/${id}/root`);
      print(io, o.json, { rootEnabled: false }, () => 'rootEnabled  false\n');
      return 0;
    },
  }),
];
