// `couchtrove flavor list|show` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, print, table, type JsonObject } from '../../../api/client.js';
import { API } from '../api.js';

export const flavorCommands: AnyCommand[] = [
  defineCommand({
    path: ['flavor', 'list'], summary: 'List flavors (RAM in MiB, vCPUs)', required: [], optional: [...API],
    run: async (o, io) => {
      const rows = (await new TroveApiClient(o).get('/flavors')).flavors as JsonObject[];
      print(io, o.json, { flavors: rows }, () => table(rows, ['id', 'name', 'ram', 'vcpus']));
      return 0;
    },
  }),
  defineCommand({
    path: ['flavor', 'show'], summary: 'Show a flavor', required: ['flavorRef'], optional: [...API], positional: 'flavorRef',
    run: async (o, io) => {
      const f = (await new TroveApiClient(o).get(`/flavors/${encodeURIComponent(o.flavorRef)}`)).flavor as JsonObject;
      print(io, o.json, { flavor: f }, () => details(f));
      return 0;
    },
  }),
];
