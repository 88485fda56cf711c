// `couchtrove configuration list|show|create|parameters|delete|attach|detach` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, label, print, table, type JsonObject } from '../../../api/client.js';
import { API } from '../api.js';

export const configurationCommands: AnyCommand[] = [
  defineCommand({
    path: ['configuration', 'list'], summary: 'List configuration groups', required: [], optional: [...API],
    run: async (o, io) => {
      const rows = await new TroveApiClient(o).list('/configurations', 'configurations');
      print(io, o.json, { configurations: rows }, () => table(rows, ['id', 'name', 'datastore_version_name', 'instance_count']));
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'show'], summary: 'Show a configuration group and its values', required: ['configurationRef'], optional: [...API], positional: 'configurationRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const r = (await c.get(`/configurations/${encodeURIComponent(await c.resolve('configuration', o.configurationRef))}`)).configuration as JsonObject;
      print(io, o.json, { configuration: r }, () => details(r));
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'create'], summary: 'Create a configuration group (--values JSON of "section/key": value)', required: ['resourceName', 'configValues'], optional: [...API, 'description', 'datastoreVersion'], positional: 'resourceName',
    specialise: { resourceName: { description: 'Name of the new configuration group (unique in the project)' }, description: { description: 'Description of the new configuration group' } },
    run: async (o, io) => {
      const body: JsonObject = { name: o.resourceName, values: o.configValues, datastore: { type: 'couchdb', ...(o.datastoreVersion ? { version: o.datastoreVersion } : {}) } };
      if (o.description !== undefined) body.description = o.description;
      const r = (await new TroveApiClient(o).request('POST', '/configurations', { configuration: body })).configuration as JsonObject;
      print(io, o.json, { configuration: r }, () => details(r));
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'parameters'], summary: 'List the CouchDB parameters a configuration group may set (the published catalogue)', required: [], optional: [...API, 'datastoreVersion'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const version = o.datastoreVersion ?? ((await c.get('/datastores/couchdb')).datastore as JsonObject).default_version as string;
      const path = o.datastoreVersion ? `/datastores/couchdb/versions/${encodeURIComponent(version)}/parameters` : `/datastores/versions/${encodeURIComponent(version)}/parameters`;
      const rows = (await c.get(path))['configuration-parameters'] as JsonObject[];
      print(io, o.json, { 'configuration-parameters': rows }, () => table(rows, ['name', 'type', 'min', 'max', 'restart_required']));
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'delete'], summary: 'Delete a configuration group (detach it first)', required: ['configurationRef'], optional: [...API], positional: 'configurationRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const conf = await c.find('configuration', o.configurationRef);
      await c.request('DELETE', `/configurations/${encodeURIComponent(conf.id)}`);
      print(io, o.json, { id: conf.id, name: conf.name, deleted: true }, () => `configuration ${label(conf)} deleted\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'attach'], summary: 'Attach a configuration group to an instance', required: ['instanceRef', 'configurationRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const conf = await c.find('configuration', o.configurationRef);
      await c.request('PUT', `/instances/${inst.id}`, { instance: { configuration: conf.id } });
      print(io, o.json, { instance: inst.id, configuration: conf.id }, () => `configuration ${label(conf)} is being attached to ${label(inst)}\n`);
      return 0;
    },
  }),
  defineCommand({
    path: ['configuration', 'detach'], summary: "Detach an instance's configuration group", required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      await c.request('PUT', `/instances/${inst.id}`, { instance: { configuration: null } });
      print(io, o.json, { instance: inst.id, configuration: null }, () => `the configuration of ${label(inst)} is being detached (restart to apply)\n`);
      return 0;
    },
  }),
];
