// docs/configuration-parameters.md, generated from the catalogue of settable CouchDB parameters
// (src/config/couchdb-parameters.ts) by scripts/gen-options-doc.mjs; a test checks that it is current.
import { COUCHDB_PARAMETERS, type CouchdbParameter } from '../config/couchdb-parameters.js';

const range = (p: CouchdbParameter): string => {
  if (p.type === 'integer') return `${p.min} to ${p.max}`;
  if (p.type === 'boolean') return 'true, false';
  if (p.values) return p.values.join(', ');
  return p.pattern?.text ?? '';
};

export function renderParametersDoc(): string {
  const lines = [
    '# Configuration parameters (couchdb datastore)',
    '',
    'Generated from the catalogue (`src/config/couchdb-parameters.ts`) by `node scripts/gen-options-doc.mjs`; do not edit by hand.',
    '',
    "The keys a configuration group may set: Trove's validation rules for CouchDB. It is an allow-list: any other key is",
    'refused when the group is created or edited (400 naming the key), and the agent refuses it again. No key names a path, a',
    'port, an address, a program or a credential; those belong to the instance and are set by the agent. The same list is',
    'served by `GET /v1.0/{project_id}/datastores/couchdb/versions/{version}/parameters[/{name}]` (and',
    '`/datastores/versions/{version_id}/parameters`), which `openstack database configuration parameter list|show` and',
    '`trove configuration-parameter-list|show` read.',
    '',
    'Values are typed: integers and booleans are JSON numbers and booleans (a whole number or `true`/`false` given as a',
    'string is accepted and stored typed). *Live* keys apply at once (CouchDB reads them when it uses them); the others',
    'are written to the instance\'s `local.ini` and leave it `RESTART_REQUIRED`, naming them, until it is restarted.',
    'Taking a key out of a group puts it back to the flavor\'s value (`couchdb/max_dbs_open`,',
    '`query_server_config/os_process_limit`) or CouchDB\'s default.',
    '',
    '| key | type | allowed | applies | CouchDB 3.5 default | what it does |',
    '|---|---|---|---|---|---|',
  ];
  for (const p of COUCHDB_PARAMETERS) {
    lines.push(`| \`${p.name}\` | ${p.type} | ${range(p)} | ${p.restartRequired ? 'restart' : 'live'} | \`${p.default}\` | ${p.description} |`);
  }
  return `${lines.join('\n')}\n`;
}
