// Structured logs (issue 15): the server's and the agents' logs are JSON lines (level, time, msg, request
// id, instance id) when stderr is not a terminal and text on one; the request log is on at info and never
// holds a token or a password; every log file the product writes is capped by rotation.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { startServer, sandbox, api, waitStatus, type J, type RealServer } from '../support/server.js';
import { makeLogger, lineLogger } from '../../src/util/log.js';
import { rotateIfLarge, tailFile } from '../../src/agent/logs.js';

const { root, stateDir, track } = sandbox('couchtrove-logs-');
let server: RealServer | undefined;
before(async () => {
  server = track(await startServer(stateDir, { COUCHTROVE_LOG_LEVEL: 'debug' }));
});

const jsonLines = (text: string): J[] => text.split('\n').filter((l) => l.trim() !== '').map((l) => {
  try {
    return JSON.parse(l) as J;
  } catch {
    throw new Error(`not a JSON line: ${l}`);
  }
});

test('server and agent logs: JSON lines with request and instance ids; no token or password in them', { timeout: 300_000 }, async () => {
  const secret = 'Very-secret-pw-42';
  const r = await api(server!.api, 'POST', '/instances', { instance: { name: 'logged', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'd1' }], users: [{ name: 'u1', password: secret, databases: [{ name: 'd1' }] }] } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const id = (r.json.instance as J).id as string;
  await waitStatus(server!.api, 'instances', id, ['ACTIVE']);
  const res = await fetch(`${server!.api}/instances/${id}`, { headers: { 'x-auth-token': 'notused' } });
  const reqId = res.headers.get('x-openstack-request-id');
  assert.match(String(reqId), /^req-[0-9a-f-]{36}$/);
  const pw = await fetch(`${server!.api}/instances/${id}/users/u1`, { method: 'PUT', headers: { 'x-auth-token': 'notused', 'content-type': 'application/json', authorization: 'Basic c2VjcmV0LWhlYWRlcg==' }, body: JSON.stringify({ user: { password: `${secret}-2` } }) });
  assert.equal(pw.status, 202);
  await fetch(`${server!.url}/health`);
  await new Promise((res2) => setTimeout(res2, 300));

  const text = server!.log();
  const lines = jsonLines(text);
  for (const l of lines) {
    assert.equal(typeof l.level, 'number');
    assert.match(String(l.time), /^\d{4}-\d\d-\d\dT/);
    assert.equal(typeof l.msg, 'string');
  }
  const mine = lines.find((l) => l.req_id === reqId);
  assert.ok(mine, `the request ${String(reqId)} is in the request log`);
  assert.equal(mine.level, 30);
  assert.equal(mine.msg, 'request');
  assert.equal(mine.method, 'GET');
  assert.equal(mine.route, '/v1.0/:project/instances/:id');
  assert.equal(mine.status, 200);
  assert.equal(mine.instance_id, id);
  // Probes are logged at debug, shown here because the level is debug.
  assert.ok(lines.some((l) => l.route === '/health' && l.level === 20));
  assert.doesNotMatch(text, new RegExp(secret), 'no password in the server log');
  assert.doesNotMatch(text, /c2VjcmV0LWhlYWRlcg==|secret-header/, 'no Authorization header in the server log');

  const agentLog = fs.readFileSync(path.join(server!.stateDir, 'instances', id, 'agent.log'), 'utf8');
  const agentLines = jsonLines(agentLog.split('\n').filter((l) => l.startsWith('{')).join('\n'));
  assert.ok(agentLines.length > 0);
  assert.ok(agentLines.some((l) => l.name === 'agent' && l.instance_id === id), 'agent lines carry the instance id');
  assert.doesNotMatch(agentLog, new RegExp(secret), 'no password in the agent log');
});

test('on a terminal the same entries are readable text; credentials passed as fields are redacted; log level filters', () => {
  const out = new PassThrough() as PassThrough & { isTTY?: boolean };
  out.isTTY = true;
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const logger = makeLogger({ name: 'server', level: 'info', stream: out });
  const log = lineLogger(logger);
  log('WARNING: something odd');
  log('instance 0f8fad5b-d9cb-469f-a165-70867728950e: task 7c9e6679-7425-40de-944b-e07fc1f90ae7 (instance.create) FAILED: no space');
  logger.info({ headers: { authorization: 'Bearer abc', 'x-auth-token': 'tok-123' }, user: { password: 'hunter22' } }, 'with credentials');
  logger.debug('not shown at info');
  const lines = text.trimEnd().split('\n');
  assert.equal(lines.length, 3, text);
  assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT[\d:.]+Z WARN {2}something odd$/);
  assert.match(lines[1]!, /^\S+ ERROR instance 0f8fad5b.* FAILED: no space\s{2}instance_id=0f8fad5b-d9cb-469f-a165-70867728950e task_id=7c9e6679-7425-40de-944b-e07fc1f90ae7$/);
  assert.match(lines[2]!, /with credentials/);
  assert.doesNotMatch(text, /abc|tok-123|hunter22/);
  assert.match(lines[2]!, /\[redacted\]/);
});

test('log files are capped: rotated by copy and truncate at the cap, the writer goes on, N kept', async () => {
  const dir = fs.mkdtempSync(path.join(root, 'rot-'));
  const file = path.join(dir, 'couchdb.log');
  const fd = fs.openSync(file, 'a'); // as CouchDB's stderr: an append-mode descriptor held open
  const line = `${'x'.repeat(99)}\n`;
  for (let round = 1; round <= 5; round++) {
    for (let i = 0; i < 20; i++) fs.writeSync(fd, `${round}${line.slice(1)}`);
    assert.equal(await rotateIfLarge(file, 1000, 2), true);
    assert.equal(fs.statSync(file).size, 0);
  }
  assert.equal(await rotateIfLarge(file, 1000, 2), false, 'under the cap: nothing to do');
  fs.writeSync(fd, 'after\n');
  fs.closeSync(fd);
  assert.equal(fs.readFileSync(file, 'utf8'), 'after\n', 'the held descriptor writes at the start of the truncated file');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['couchdb.log', 'couchdb.log.1', 'couchdb.log.2']);
  assert.match(fs.readFileSync(`${file}.1`, 'utf8'), /^5x/);
  assert.match(fs.readFileSync(`${file}.2`, 'utf8'), /^4x/);
  assert.equal(await tailFile(`${file}.1`, 2), `5${line.slice(1)}5${line.slice(1)}`);
});

test('the agent rotates its log files at its cap and reports them; readLog gives the last lines and refuses unknown logs', async () => {
  const { Agent } = await import('../../src/agent/agent.js');
  const dir = fs.mkdtempSync(path.join(root, 'agent-'));
  const agent = await Agent.open(dir, { logMaxBytes: 1000, logKeep: 2 });
  fs.writeFileSync(path.join(dir, 'agent.log'), 'line\n'.repeat(300));
  assert.deepEqual(await agent.rotateLogs(), ['agent']);
  assert.equal(fs.statSync(path.join(dir, 'agent.log')).size, 0);
  assert.equal(fs.statSync(path.join(dir, 'agent.log.1')).size, 1500);
  assert.deepEqual(await agent.rotateLogs(), [], 'under the cap');
  const [info] = await agent.logs();
  assert.deepEqual(info, { name: 'agent', size: 0, rotatedBytes: 1500, maxBytes: 1000, keep: 2 });
  fs.appendFileSync(path.join(dir, 'agent.log'), 'a\nb\nc\n');
  assert.deepEqual(await agent.readLog('agent', 2), { name: 'agent', text: 'b\nc\n', lines: 2 });
  await assert.rejects(agent.readLog('../etc/passwd', 2), /no log/);
});
