// The API's own trust gaps of issue 14: local auth mode (token "notused") only on loopback, tokens
// compared exactly (in constant time), and links that never reflect the request's Host header.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startPlane, type TestPlane } from '../support/plane.js';
import { tempDir } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { isLoopback, loadServerConfig } from '../../src/config/server.js';
import { tokenMatcher } from '../../src/api/server.js';

interface J {
  [k: string]: unknown;
}
const root = tempDir('couchtrove-auth-');
/** The server's own variables removed from the environment the CLI runs with. */
const CLEAN_ENV = Object.fromEntries(Object.keys(process.env).filter((k) => k.startsWith('COUCHTROVE_')).map((k) => [k, undefined]));
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('local auth mode cannot listen on a non-loopback address: a clear error unless token auth is configured', async () => {
  for (const host of ['0.0.0.0', '::', '192.168.1.20', '10.0.0.1', 'db.example.com', '::ffff:10.0.0.1']) {
    assert.throws(() => loadServerConfig({ env: {}, overrides: { stateDir: root, host } }), (e: Error) =>
      e.name === 'UsageError' && e.message.includes('auth_mode = local') && e.message.includes(JSON.stringify(host)) && /auth_mode = token/.test(e.message), host);
    assert.throws(() => loadServerConfig({ env: { COUCHTROVE_HOST: host }, overrides: { stateDir: root } }), /loopback/, `${host} from the environment`);
    // Tokens given to projects do not make local mode safe: "notused" would still be accepted.
    assert.throws(() => loadServerConfig({ env: { COUCHTROVE_TOKENS: 'alpha:token-alpha-1' }, overrides: { stateDir: root, host } }), /loopback/);
    assert.equal(loadServerConfig({ env: { COUCHTROVE_AUTH_MODE: 'token', COUCHTROVE_TOKENS: 'alpha:token-alpha-1' }, overrides: { stateDir: root, host } }).host, host);
  }
  for (const host of ['127.0.0.1', '127.0.0.2', '::1', '[::1]', 'localhost', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
    assert.ok(isLoopback(host), host);
    assert.equal(loadServerConfig({ env: {}, overrides: { stateDir: root, host } }).authMode, 'local');
  }
  // The server command refuses before it creates anything.
  const stateDir = path.join(root, 'never');
  const r = await runCli(['server', '--host', '0.0.0.0', '--port', '0', '--state-dir', stateDir], CLEAN_ENV);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /auth_mode = local accepts the token "notused".*not "0\.0\.0\.0"/);
  assert.ok(!fs.existsSync(stateDir), 'nothing was created');
});

test('tokens are compared exactly: no prefix, extension, case or padding variant is accepted', () => {
  const match = tokenMatcher(loadServerConfig({ env: { COUCHTROVE_AUTH_MODE: 'token', COUCHTROVE_TOKENS: 'alpha:s3cret-token-alpha,beta:s3cret-token-beta,beta:second-token-b2' }, overrides: { stateDir: root } }));
  assert.equal(match('s3cret-token-alpha'), 'alpha');
  assert.equal(match('s3cret-token-beta'), 'beta');
  assert.equal(match('second-token-b2'), 'beta');
  for (const bad of ['s3cret-token-alph', 's3cret-token-alphaa', 'S3CRET-TOKEN-ALPHA', ' s3cret-token-alpha', 's3cret-token-alpha ', 's3cret-token', '', 'notused', 'second-token-b', 'second-token-b2x', 'x'.repeat(10_000)]) {
    assert.equal(match(bad), undefined, JSON.stringify(bad.slice(0, 40)));
  }
  const local = tokenMatcher(loadServerConfig({ env: { COUCHTROVE_TOKENS: 'alpha:s3cret-token-alpha' }, overrides: { stateDir: root } }));
  assert.equal(local('notused'), 'local');
  assert.equal(local('notused '), undefined);
});

async function inject(p: TestPlane, url: string, headers: Record<string, string> = {}): Promise<{ status: number; json: J; headers: Record<string, unknown> }> {
  const r = await p.app.inject({ method: 'GET', url, headers: { 'x-auth-token': 'notused', ...headers } });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {}, headers: r.headers };
}

/** Every href in a response. */
const hrefs = (v: unknown): string[] => (typeof v !== 'object' || v === null ? [] : Array.isArray(v) ? v.flatMap(hrefs) : Object.entries(v).flatMap(([k, x]) => (k === 'href' && typeof x === 'string' ? [x] : hrefs(x))));

test("the request's Host header is never reflected: links use public_url, else the listener's address", async () => {
  const evil = { host: 'evil.example.com:8779' };
  const plain = await startPlane();
  try {
    await plain.app.inject({ method: 'POST', url: '/v1.0/local/configurations', headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, payload: JSON.stringify({ configuration: { name: 'c1', values: {} } }) });
    await plain.app.inject({ method: 'POST', url: '/v1.0/local/configurations', headers: { 'x-auth-token': 'notused', 'content-type': 'application/json' }, payload: JSON.stringify({ configuration: { name: 'c2', values: {} } }) });
    const all = [
      ...hrefs((await inject(plain, '/', evil)).json),
      ...hrefs((await inject(plain, '/v1.0/local/flavors', evil)).json),
      ...hrefs((await inject(plain, '/v1.0/local/configurations?limit=1', evil)).json),
      ...hrefs((await inject(plain, '/v1.0/local/datastores', evil)).json),
    ];
    assert.ok(all.length > 5);
    for (const h of all) assert.ok(h.startsWith('http://127.0.0.1:8779/'), h);
    const auth = await inject(plain, '/auth', { ...evil, 'x-auth-user': 'u', 'x-auth-key': 'k' });
    assert.equal(auth.headers['x-server-management-url'], 'http://127.0.0.1:8779/v1.0/local');
  } finally {
    await plain.close();
  }
  const pub = await startPlane({ env: { COUCHTROVE_PUBLIC_URL: 'https://db.example.org/trove/' } });
  try {
    assert.equal(pub.config.publicUrl, 'https://db.example.org/trove');
    const links = hrefs((await inject(pub, '/v1.0/local/flavors', evil)).json);
    assert.ok(links.length > 0);
    for (const h of links) assert.match(h, /^https:\/\/db\.example\.org\/trove\/(v1\.0\/local\/)?flavors\//);
    const auth = await inject(pub, '/auth', { ...evil, 'x-auth-user': 'u', 'x-auth-key': 'k' });
    assert.equal(auth.headers['x-server-management-url'], 'https://db.example.org/trove/v1.0/local');
  } finally {
    await pub.close();
  }
});

test('public_url is checked where it is given: file, environment and --public-url', async () => {
  for (const bad of ['ftp://x.example', 'https://user:pw@x.example', 'https://x.example/?a=1', 'https://x.example/#f', 'not a url']) {
    assert.throws(() => loadServerConfig({ env: { COUCHTROVE_PUBLIC_URL: bad }, overrides: { stateDir: root } }), /public_url/, bad);
  }
  const f = path.join(root, 'pub.conf');
  fs.writeFileSync(f, 'public_url = gopher://x\n');
  assert.throws(() => loadServerConfig({ configFile: f, env: {}, overrides: { stateDir: root } }), new RegExp(`${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:1: public_url: expected an http`));
  const r = await runCli(['server', '--public-url', 'https://u:p@x.example', '--state-dir', path.join(root, 'never2')], CLEAN_ENV);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--public-url: credentials/);
});
