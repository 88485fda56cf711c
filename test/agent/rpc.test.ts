// The agent's RPC: AgentClient -> `agent serve` (fastify) -> Agent -> CouchDB, with the bearer token,
// errors as {error: {code, message}} with their HTTP status, and the serve command as a process.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AgentClient } from '../../src/agent/client.js';
import { startAgentServer, type RunningAgentServer } from '../../src/agent/server.js';
import { freePort, repoRoot } from '../support/couchdb.js';
import { couch, Harness, rejectsWithCode } from './helpers.js';

describe(`agent RPC [${couch.label}]`, () => {
  const h = new Harness();
  const token = randomBytes(24).toString('hex');
  let server: RunningAgentServer;
  let client: AgentClient;

  before(async () => {
    await h.init('agent-rpc');
    const agent = await h.open('main');
    server = await startAgentServer({ host: '127.0.0.1', port: 0, token, agent });
    client = new AgentClient(server.url, token);
  });
  after(async () => {
    await server?.close();
    await h.cleanup();
  });

  const raw = async (method: string, p: string, body?: string, auth = `Bearer ${token}`) => {
    const res = await fetch(`${server.url}${p}`, { method, headers: { authorization: auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body });
    return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } };
  };

  test('requests without the bearer token, or with a wrong one, get 401', async () => {
    assert.deepEqual(await raw('GET', '/v1/status', undefined, ''), { status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'missing or wrong bearer token' } } });
    assert.equal((await raw('GET', '/v1/status', undefined, `Bearer ${token}x`)).status, 401);
    assert.equal((await raw('GET', '/v1/status', undefined, `Basic ${token}`)).status, 401);
    await rejectsWithCode(new AgentClient(server.url, 'wrong-token-0123456789').status(), 'UNAUTHORIZED');
  });

  test('the whole interface through AgentClient', async () => {
    assert.deepEqual(await client.status(), { state: 'BUILD', reason: 'waiting for prepare' });
    const settings = await h.settings('main', { volumeBytes: 512 * 1024 ** 2 });
    const st = await client.prepare(settings);
    h.track(h.agents[0]!);
    assert.equal(st.state, 'RUNNING', st.reason);
    await client.createDatabase('a/b');
    await client.createDatabase('plain');
    assert.deepEqual(await client.listDatabases(), ['a/b', 'plain']);
    await client.createUser({ name: 'alice', password: 'pw-alice', roles: ['r'], databases: ['a/b'] });
    await client.grantAccess('alice', ['plain']);
    assert.deepEqual(await client.getUser('alice'), { name: 'alice', roles: ['r'], databases: ['a/b', 'plain'] });
    await client.revokeAccess('alice', 'a/b');
    assert.deepEqual((await client.listUsers()).map((u) => [u.name, u.databases]), [['alice', ['plain']]]);
    await client.changePassword('alice', 'pw-2');
    const root = await client.enableRoot();
    assert.equal(root.name, 'root');
    assert.equal(await client.isRootEnabled(), true);
    await client.disableRoot();
    assert.equal(await client.isRootEnabled(), false);
    assert.deepEqual(await client.applyConfiguration({ 'log/level': 'info' }), { applied: ['log/level'], pending: [], restartRequired: false });
    const v = await client.volumeUsage();
    assert.equal(v.total, 512 * 1024 ** 2);
    assert.equal(await client.progress(), null);
    const repo = path.join(h.root, 'repo');
    const b = await client.backup({ storage: `file://${repo}`, id: 'rpc-1', compression: 'gzip' });
    assert.equal(b.id, 'rpc-1');
    assert.equal(b.location, `file://${repo}`);
    await client.deleteUser('alice');
    await client.deleteDatabase('a/b');
    assert.deepEqual(await client.listDatabases(), ['plain']);
    assert.equal((await client.restart()).state, 'RUNNING');
    h.track(h.agents[0]!);
    assert.equal((await client.stop()).state, 'SHUTDOWN');
    assert.equal((await client.start()).state, 'RUNNING');
    h.track(h.agents[0]!);
  });

  test('errors keep their code and get their HTTP status', async () => {
    const cases: [string, string, string | undefined, number, string][] = [
      ['POST', '/v1/databases', JSON.stringify({ name: 'Bad' }), 400, 'INVALID_ARGUMENT'],
      ['POST', '/v1/databases', JSON.stringify({ name: 'plain' }), 409, 'ALREADY_EXISTS'],
      ['DELETE', '/v1/databases/nosuch', undefined, 404, 'NOT_FOUND'],
      ['GET', '/v1/users/nobody', undefined, 404, 'NOT_FOUND'],
      ['POST', '/v1/configuration', JSON.stringify({ overrides: { 'chttpd/port': '1' } }), 400, 'REFUSED'],
      ['POST', '/v1/users', '{"name": "x", ', 400, 'INVALID_ARGUMENT'],
      ['POST', '/v1/users', '[1,2]', 400, 'INVALID_ARGUMENT'],
      ['POST', '/v1/users', JSON.stringify({ name: 'x' }), 400, 'INVALID_ARGUMENT'],
      ['PUT', '/v1/users/plain/password', JSON.stringify({}), 400, 'INVALID_ARGUMENT'],
      ['POST', '/v1/prepare', JSON.stringify({ port: 'x' }), 400, 'INVALID_ARGUMENT'],
      ['GET', '/v1/nothing', undefined, 404, 'NOT_FOUND'],
    ];
    for (const [method, p, body, status, code] of cases) {
      const r = await raw(method, p, body);
      assert.equal(r.status, status, `${method} ${p} ${body ?? ''}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error?.code, code, `${method} ${p}`);
      assert.ok((r.body.error?.message ?? '').length > 0);
    }
    await rejectsWithCode(client.createDatabase('Bad'), 'INVALID_ARGUMENT', /invalid database name "Bad"/);
    await rejectsWithCode(client.revokeAccess('nobody', 'plain'), 'NOT_FOUND');
  });

  test('an agent that does not answer: UNREACHABLE', async () => {
    const port = await freePort();
    await rejectsWithCode(new AgentClient(`http://127.0.0.1:${port}`, token).status(), 'UNREACHABLE', /ECONNREFUSED/);
  });

  test('`couchtrove agent serve --config FILE` serves until SIGTERM; the token file must be private', async () => {
    const dir = path.join(h.root, 'serve');
    await fsp.mkdir(dir, { recursive: true });
    const tokenFile = path.join(dir, 'token');
    await fsp.writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const port = await freePort();
    const config = path.join(dir, 'agent.json');
    await fsp.writeFile(config, JSON.stringify({ host: '127.0.0.1', port, tokenFile, instanceDir: path.join(dir, 'agent') }));
    const run = (cfg: string) => spawn(process.execPath, [path.join(repoRoot, 'bin', 'couchtrove.js'), 'agent', 'serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });

    const child = run(config);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      for (let i = 0; i < 100 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, new RegExp(`couchtrove agent listening on http://127\\.0\\.0\\.1:${port}`), err);
      const c = new AgentClient(`http://127.0.0.1:${port}`, token);
      assert.equal((await c.status()).state, 'BUILD');
      await rejectsWithCode(c.createDatabase('x'), 'CONFLICT', /not been prepared/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, err);
    assert.ok(!err.includes(token) && !out.includes(token), 'the token is never printed');
    // JSON lines (stderr is not a terminal); the control plane's status polls are at debug, other requests at info.
    assert.match(err, /^\{"level":30,[^\n]*"name":"agent","msg":"POST \/v1\/databases 409 \d+ms"\}$/m);
    assert.doesNotMatch(err, /GET \/v1\/status/);

    await fsp.chmod(tokenFile, 0o644);
    const bad = run(config);
    let badErr = '';
    bad.stderr.on('data', (d: Buffer) => (badErr += d.toString()));
    const code = await new Promise<number | null>((resolve) => bad.on('exit', (c) => resolve(c)));
    assert.equal(code, 1);
    assert.match(badErr, /token file .* is readable by others \(mode 644\): chmod 600 it/);
  });
});
