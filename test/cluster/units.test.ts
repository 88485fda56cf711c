// What a cluster member's CouchDB reads, and the defaults for a cluster's size (docs/cluster.md): no CouchDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IniFile } from '../../src/agent/ini.js';
import { buildLocalIni, renderVmArgs } from '../../src/agent/local-ini.js';
import { checkSettings } from '../../src/agent/validate.js';
import { clusterDefaults, memberNode } from '../../src/tasks/clusters.js';
import type { InstanceSettings } from '../../src/agent/protocol.js';

const base: InstanceSettings = {
  instanceId: 'i1', port: 5984, bindAddress: '127.0.0.1', dataDir: '/srv/i1/data', instanceDir: '/srv/i1/agent',
  nodeName: 'couchdb-0f0e4a52-1b1c-4c1d-9e1f-000000000001@127.0.0.1', epmdPort: 4400, couchdbHome: '/opt/couchdb',
};
const member: InstanceSettings = { ...base, cluster: { distPort: 9100, n: 3, q: 2, uuid: 'a'.repeat(32), secretsFile: '/var/lib/couchtrove/clusters/c/secrets.json' } };

test('n = min(3, nodes); q grows with the size', () => {
  assert.deepEqual([2, 3, 4, 6, 7, 9].map((k) => clusterDefaults(k)), [
    { n: 2, q: 2 }, { n: 3, q: 2 }, { n: 3, q: 4 }, { n: 3, q: 4 }, { n: 3, q: 8 }, { n: 3, q: 8 },
  ]);
  assert.equal(memberNode({ id: '0f0e4a52-1b1c-4c1d-9e1f-000000000001' }, {}), base.nodeName);
});

test("a member listens for its peers on its one distribution port, on loopback; a single node's vm.args is unchanged", () => {
  const args = renderVmArgs(member);
  assert.match(args, /^-kernel inet_dist_listen_min 9100$/m);
  assert.match(args, /^-kernel inet_dist_listen_max 9100$/m);
  assert.match(args, /^-kernel inet_dist_use_interface \{127,0,0,1\}$/m);
  assert.match(args, new RegExp(`^-name ${member.nodeName}$`, 'm'));
  assert.doesNotMatch(args, /setcookie/);
  assert.doesNotMatch(renderVmArgs(base), /inet_dist_listen/);
});

test('a containerised member: no epmd, every member on the one port, on the container\'s addresses', () => {
  const boxed: InstanceSettings = { ...member, nodeName: 'couchdb@couchtrove-i1.cluster', cluster: { ...member.cluster!, epmdless: true } };
  const args = renderVmArgs(boxed);
  assert.match(args, /^-start_epmd false$/m);
  assert.match(args, /^-erl_epmd_port 9100$/m);
  assert.match(args, /^-kernel inet_dist_listen_min 9100$/m);
  assert.doesNotMatch(args, /inet_dist_use_interface/);
  assert.doesNotMatch(renderVmArgs(member), /start_epmd|erl_epmd_port/, 'a local member keeps the cluster\'s epmd');
  assert.equal(checkSettings(boxed).cluster?.epmdless, true);
  assert.throws(() => checkSettings({ ...base, cluster: { ...member.cluster, epmdless: 'yes' } }), /cluster\.epmdless/);
  assert.equal(memberNode({ id: 'i1' }, { clusterNode: (i) => `couchdb@couchtrove-${i.id}.cluster` }), boxed.nodeName);
});

test("a member's local.ini: not single_node, the cluster's n and q and auth secret, whatever was found", () => {
  const found = IniFile.parse('[cluster]\nn = 1\nq = 16\n[couchdb]\nsingle_node = true\n[chttpd_auth]\nsecret = ownsecret0123456789\n');
  const { text } = buildLocalIni({ settings: member, uuid: member.cluster!.uuid, agentAdmin: { username: 'couchtrove', password: 'pw' }, overrides: [], existing: found, authSecret: 'clustersecret0123456789' });
  const ini = IniFile.parse(text);
  assert.equal(ini.get('couchdb', 'single_node'), 'false');
  assert.equal(ini.get('cluster', 'n'), '3');
  assert.equal(ini.get('cluster', 'q'), '2');
  assert.equal(ini.get('couchdb', 'uuid'), member.cluster!.uuid);
  assert.equal(ini.get('chttpd_auth', 'secret'), 'clustersecret0123456789');
  const single = IniFile.parse(buildLocalIni({ settings: base, uuid: 'u1', agentAdmin: { username: 'couchtrove', password: 'pw' }, overrides: [], existing: found }).text);
  assert.equal(single.get('couchdb', 'single_node'), 'true');
  assert.equal(single.get('cluster', 'n'), '1');
  assert.equal(single.get('chttpd_auth', 'secret'), 'ownsecret0123456789');
});

test('the agent refuses cluster settings that are not whole', () => {
  assert.deepEqual(checkSettings(member).cluster, member.cluster);
  const bad = (cluster: unknown): RegExp | void => assert.throws(() => checkSettings({ ...base, cluster }), /cluster/);
  bad({ ...member.cluster, uuid: 'not-hex' });
  bad({ ...member.cluster, distPort: 5984 });
  bad({ ...member.cluster, secretsFile: 'relative/secrets.json' });
  bad({ ...member.cluster, n: 0 });
  bad(null);
});
