// The real clients on what couchtrove does not do: `openstack database limit list` and cluster calls print
// the 501 notImplemented message (guest logs, once a 404 the client crashed on, are implemented now:
// test/api/ops-clients.test.ts), `--is-public` and friends on create are refused with a
// clean 400, `instance upgrade` to an unknown version is a 404 naming it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startServer, tempDir, api, waitStatus, killUnder, type RealServer } from '../support/server.js';
import { clientBudget, clientsSkip, troveClients } from '../support/trove-clients.js';

const skip = clientsSkip;
const root = tempDir('couchtrove-unsupported-');
let server: RealServer | undefined;
let id = '';
before(async () => {
  if (skip) return;
  server = await startServer(path.join(root, 'state'));
  const r = await api(server.api, 'POST', '/instances', { instance: { name: 'un1', flavorRef: '1', volume: { size: 1 } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  id = (r.json.instance as { id: string }).id;
  await waitStatus(server.api, 'instances', id, ['ACTIVE']);
});
after(async () => {
  await server?.kill('SIGKILL');
  killUnder(root);
  fs.rmSync(root, { recursive: true, force: true });
});

const { os, trove } = troveClients(path.join(root, 'home'), () => server!);

/** The client's failure output (it exits non-zero); fails the test if the command succeeded. */
async function failure(run: Promise<string>): Promise<string> {
  const out = await run.then((o) => `succeeded: ${o}`, (e: Error) => e.message);
  assert.doesNotMatch(out, /^succeeded/, out);
  assert.doesNotMatch(out, /Traceback|KeyError|AttributeError/, out);
  return out;
}

test('openstack/trove: unimplemented calls give the 501 message, not a crash', { skip, timeout: clientBudget(4, 120_000) }, async () => {
  // A log that does not exist is a clean 404 naming the logs there are.
  assert.match(await failure(os('log', 'show', id, 'general')), /No log "general": the logs of a couchdb instance are couchdb\. \(HTTP 404\)/);
  assert.match(await failure(trove('module-list')), /Module list \(GET \/modules\) is not implemented by couchtrove\. \(HTTP 501\)/);
  assert.match(await failure(os('limit', 'list')), /Limit list \(GET \/limits\) is not implemented by couchtrove\. \(HTTP 501\)/);
});

test('openstack: --is-public, --allowed-cidr, --nic, --availability-zone refused with 400; upgrade checked', { skip, timeout: clientBudget(11, 120_000) }, async () => {
  const create = (...extra: string[]): Promise<string> => os('instance', 'create', 'pub', '--flavor', '1', '--size', '1', '--datastore', 'couchdb', '--datastore-version', '3.5', ...extra);
  assert.match(await failure(create('--is-public')), /"access"\."is_public" true is not supported by the local compute driver: instances listen on the loopback address only\. \(HTTP 400\)/);
  assert.match(await failure(create('--allowed-cidr', '10.0.0.0/8')), /"access"\."allowed_cidrs" is not supported by the local compute driver.*\(HTTP 400\)/);
  assert.match(await failure(create('--nic', 'net-id=net-1')), /"nics" is not supported by the local compute driver.*\(HTTP 400\)/);
  assert.match(await failure(create('--availability-zone', 'nova')), /"availability_zone" is not supported by the local compute driver.*\(HTTP 400\)/);
  assert.match(await failure(os('instance', 'update', id, '--is-public')), /"access"\."is_public" true is not supported by the local compute driver.*\(HTTP 400\)/);
  assert.equal(((await api(server!.api, 'GET', '/instances')).json.instances as unknown[]).length, 1, 'nothing was created');
  assert.match(await failure(os('instance', 'upgrade', id, '9.9')), /Datastore version 9\.9 for datastore couchdb could not be found\. \(HTTP 404\)/);
  assert.match(await failure(os('instance', 'upgrade', id, '3.5')), /already runs couchdb 3\.5: nothing to upgrade\. \(HTTP 400\)/);
  // openstack sends "access": {"is_public": false} on every create and --is-private on update: both accepted.
  await os('instance', 'update', id, '--is-private');
});
