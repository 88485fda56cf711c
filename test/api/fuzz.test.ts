// Property test: thousands of generated requests (odd paths, wrong types, malformed JSON, odd names,
// big bodies, unknown ids) never get a 5xx or crash the server, and every error is a Trove body.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import { registeredRoutes } from '../../src/api/server.js';

let p: TestPlane;
let instanceId = '';
let backupId = '';
before(async () => {
  p = await startPlane({ env: { COUCHTROVE_MAX_BODY_BYTES: '65536' } });
  const r = await p.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'fz', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'db' }] } }) });
  instanceId = (JSON.parse(r.body) as { instance: { id: string } }).instance.id;
  await until('ACTIVE', async () => (await p.store.get('instances', instanceId))?.status, (s) => s === 'ACTIVE');
  const b = await p.app.inject({ method: 'POST', url: '/v1.0/local/backups', headers: H, payload: JSON.stringify({ backup: { name: 'b', instance: instanceId } }) });
  backupId = (JSON.parse(b.body) as { backup: { id: string } }).backup.id;
});
after(async () => p.close());

const odd = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', ' ', '..', '%2e%2e', '%00', '%ff', '%', 'ünïcødé', '☃', '<script>', "'; DROP TABLE instances; --", 'a/b', 'x'.repeat(2000), '__proto__', 'constructor', 'root', '_users', 'notused'),
);
const seg = (): fc.Arbitrary<string> => fc.oneof(odd.map((s) => encodeURIComponent(s)), fc.constantFrom(instanceId, backupId, '1', 'couchdb', '3.5'));
const json: fc.Arbitrary<unknown> = fc.jsonValue({ maxDepth: 4 });
const field = fc.oneof(json, odd, fc.integer(), fc.double(), fc.constant(null), fc.boolean(), fc.array(json, { maxLength: 3 }));
const bodies = fc.oneof(
  fc.record({ instance: fc.record({ name: field, flavorRef: field, volume: fc.oneof(field, fc.record({ size: field })), datastore: fc.oneof(field, fc.record({ type: field, version: field })), databases: fc.oneof(field, fc.array(fc.record({ name: field }), { maxLength: 3 })), users: fc.oneof(field, fc.array(fc.record({ name: field, password: field, databases: field }), { maxLength: 3 })), restorePoint: fc.oneof(field, fc.record({ backupRef: field })), replica_of: field, configuration: field }, { requiredKeys: [] }) }),
  fc.record({ backup: fc.record({ name: field, instance: fc.oneof(field, fc.constant(instanceId)), description: field, parent_id: field, incremental: field }, { requiredKeys: [] }) }),
  fc.record({ resize: fc.oneof(field, fc.record({ volume: fc.oneof(field, fc.record({ size: field })), flavorRef: field }, { requiredKeys: [] })) }),
  fc.record({ restart: field }),
  fc.record({ databases: fc.oneof(field, fc.array(fc.record({ name: field }), { maxLength: 3 })) }),
  fc.record({ users: fc.oneof(field, fc.array(fc.record({ name: field, password: field, databases: field }, { requiredKeys: [] }), { maxLength: 3 })) }),
  fc.record({ configuration: fc.record({ name: field, values: fc.oneof(field, fc.dictionary(odd, field, { maxKeys: 3 })), datastore: field }, { requiredKeys: [] }) }),
  json,
);
const rawBody = fc.oneof(
  bodies.map((b) => JSON.stringify(b)),
  fc.string({ maxLength: 100 }),
  fc.constantFrom('{', '{"instance":', 'null', '[]', '""', '{"__proto__":{"x":1}}', '{"instance":{"constructor":{"prototype":{}}}}', '\u0000'),
  fc.constant(JSON.stringify({ instance: { name: 'x'.repeat(70_000) } })),
);
const pathArb = fc.oneof(
  fc.tuple(seg(), seg(), seg()).map(([a, b, c]) => `/v1.0/local/instances/${a}/${b}/${c}`),
  fc.tuple(fc.constantFrom('instances', 'backups', 'flavors', 'datastores', 'configurations', 'instances/detail'), seg()).map(([k, s]) => `/v1.0/local/${k}/${s}`),
  fc.constantFrom('instances', 'backups', 'configurations', 'flavors', 'datastores').map((k) => `/v1.0/local/${k}`),
  fc.tuple(fc.constantFrom('databases', 'users', 'root', 'action', 'backups', 'configuration', 'log', 'metadata', 'modules'), seg()).map(([k, s]) => `/v1.0/local/instances/${instanceId}/${k}${s ? `/${s}` : ''}`),
  fc.tuple(fc.constantFrom('databases', 'users', 'root', 'action'), seg()).map(([k]) => `/v1.0/local/instances/${instanceId}/${k}`),
  fc.tuple(seg(), seg()).map(([u, d]) => `/v1.0/local/instances/${instanceId}/users/${u}/databases/${d}`),
  fc.tuple(seg(), odd).map(([a, q]) => `/v1.0/${a}/instances?limit=${encodeURIComponent(q)}&marker=${encodeURIComponent(q)}`),
  fc.tuple(odd, odd).map(([l, m]) => `/v1.0/local/backups?limit=${encodeURIComponent(l)}&marker=${encodeURIComponent(m)}&instance_id=${encodeURIComponent(m)}&datastore=${encodeURIComponent(l)}`),
  odd.map((s) => `/${s}`),
);
const request = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'),
  path: pathArb,
  body: fc.option(rawBody, { nil: undefined }),
  contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/xml', undefined),
  token: fc.constantFrom('notused', 'notused', 'notused', 'bad', undefined),
});

test('generated requests: never a 5xx, always a Trove error body', async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(request, async (rq) => {
      // light-my-request (inject) cannot even build some raw paths (e.g. "/\\"); those are not sent.
      try {
        new URL(rq.path, 'http://localhost');
      } catch {
        fc.pre(false);
      }
      n++;
      const headers: Record<string, string> = {};
      if (rq.contentType) headers['content-type'] = rq.contentType;
      if (rq.token) headers['x-auth-token'] = rq.token;
      const r = await p.app.inject({ method: rq.method as 'GET', url: rq.path, headers, ...(rq.body === undefined || rq.method === 'GET' || rq.method === 'HEAD' ? {} : { payload: rq.body }) });
      // 501 notImplemented is the one 5xx allowed: Trove calls couchtrove does not implement (src/api/unsupported.ts).
      assert.ok(r.statusCode < 500 || r.statusCode === 501, `${rq.method} ${rq.path.slice(0, 200)} body ${String(rq.body).slice(0, 300)} -> ${r.statusCode} ${r.body.slice(0, 300)}`);
      if (r.statusCode >= 400 && rq.method !== 'HEAD') {
        const j = JSON.parse(r.body) as Record<string, { code: number; message: string }>;
        const keys = Object.keys(j);
        assert.equal(keys.length, 1, r.body);
        assert.equal(j[keys[0]!]!.code, r.statusCode);
        assert.ok(typeof j[keys[0]!]!.message === 'string' && j[keys[0]!]!.message.length > 0);
      }
    }),
    { numRuns: Number(process.env.FUZZ_RUNS ?? 3000), seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
  );
  assert.ok(n >= 1000);
  // Still serving, and the instance survived whatever was thrown at it (or was deleted by a valid request).
  const v = await p.app.inject({ method: 'GET', url: '/v1.0/local/flavors', headers: H });
  assert.equal(v.statusCode, 200);
});

/** A value for a route parameter: the ids that exist, or something odd. */
const param = (name: string): fc.Arbitrary<string> =>
  name === 'account'
    ? fc.oneof(fc.constant('AUTH_local'), fc.constant('AUTH_other'), odd.map((x) => encodeURIComponent(x)))
    : name === 'container'
      ? fc.oneof(fc.constant('database_logs'), odd.map((x) => encodeURIComponent(x)))
      : name === 'project'
        ? fc.oneof(fc.constant('local'), odd.map((x) => encodeURIComponent(x)))
        : seg();
/** Query strings, repeated parameters included (they arrive as arrays). */
const query = fc.array(fc.tuple(fc.constantFrom('prefix', 'marker', 'limit', 'format', 'instance_id', 'datastore', 'name', 'x'), fc.oneof(odd, fc.constant('json'))), { maxLength: 4 });
/** Keystone bodies: the password flow with odd scopes (issue 22: {"id": "alpha", "name": "beta"}, {"id": ["beta"]}). */
const keystone = fc.record({
  auth: fc.record({
    identity: fc.oneof(field, fc.record({ methods: fc.oneof(field, fc.constant(['password'])), password: fc.oneof(field, fc.record({ user: fc.oneof(field, fc.record({ name: field, password: fc.oneof(field, fc.constant('notused')) }, { requiredKeys: [] })) })) }, { requiredKeys: [] })),
    scope: fc.oneof(field, fc.record({ project: fc.oneof(field, fc.record({ id: fc.oneof(field, fc.constant('local')), name: fc.oneof(field, fc.constant('local')) }, { requiredKeys: [] })) }, { requiredKeys: [] })),
  }, { requiredKeys: [] }),
});

test('every registered route (Trove API, Swift view, Keystone facade, operations): never a 5xx', async (t) => {
  const routes = registeredRoutes(p.app).filter((r) => r.method !== 'OPTIONS');
  assert.ok(routes.length > 40, `routes registered: ${routes.length}`);
  for (const must of ['/swift/v1/:account/:container', '/swift/v1/:account/:container/*', '/v3/auth/tokens', '/health/ready']) {
    assert.ok(routes.some((r) => r.url === must), `the route list has ${must}`);
  }
  const runsPer = Number(process.env.FUZZ_ROUTE_RUNS ?? 12);
  const hit = new Set<string>();
  for (const route of routes) {
    const names = [...route.url.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]!);
    const arb = fc.record({
      params: fc.tuple(...names.map(param), odd.map((x) => x.split('/').map(encodeURIComponent).join('/'))),
      query,
      body: fc.option(fc.oneof(rawBody, keystone.map((k) => JSON.stringify(k))), { nil: undefined }),
      token: fc.constantFrom('notused', 'notused', 'bad', undefined),
    });
    await fc.assert(
      fc.asyncProperty(arb, async (rq) => {
        let i = 0;
        const wild = rq.params[names.length]!;
        let url = route.url.replace(/:([A-Za-z_]+)/g, () => rq.params[i++]!).replace(/\*$/, wild);
        if (rq.query.length) url += `?${rq.query.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')}`;
        try {
          new URL(url, 'http://localhost');
        } catch {
          fc.pre(false);
        }
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (rq.token) headers['x-auth-token'] = rq.token;
        const r = await p.app.inject({ method: route.method as 'GET', url, headers, ...(rq.body === undefined || route.method === 'GET' || route.method === 'HEAD' ? {} : { payload: rq.body }) });
        hit.add(`${route.method} ${route.url}`);
        // 501: calls couchtrove does not implement; 503 from readiness is its answer, not a fault.
        const allowed = r.statusCode < 500 || r.statusCode === 501 || (route.url === '/health/ready' && r.statusCode === 503);
        assert.ok(allowed, `${route.method} ${url.slice(0, 200)} body ${String(rq.body).slice(0, 300)} -> ${r.statusCode} ${r.body.slice(0, 300)}`);
      }),
      { numRuns: runsPer, seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
    );
  }
  t.diagnostic(`${routes.length} routes (method and pattern), ${runsPer} generated requests each`);
  assert.equal(hit.size, routes.length, `routes not reached: ${routes.filter((r) => !hit.has(`${r.method} ${r.url}`)).map((r) => `${r.method} ${r.url}`).join(', ')}`);
});

test('issue 22: repeated Swift parameters and odd Keystone scopes are refused with 4xx naming the problem', async () => {
  const list = await p.app.inject({ method: 'GET', url: '/swift/v1/AUTH_local/database_logs?prefix=a&prefix=b', headers: { 'x-auth-token': 'notused' } });
  assert.equal(list.statusCode, 400, list.body);
  assert.match(list.body, /"prefix" is given more than once/);
  const token = (scope: unknown) =>
    p.app.inject({ method: 'POST', url: '/v3/auth/tokens', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'u', password: 'notused' } } }, scope } }) });
  for (const scope of [{ project: { id: 'alpha', name: 'beta' } }, { project: { id: ['beta'] } }, { project: { id: 'local', name: 'beta' } }, { project: { name: 5 } }, { project: 'local' }, 'local']) {
    const r = await token(scope);
    assert.equal(r.statusCode, 401, `${JSON.stringify(scope)} -> ${r.statusCode} ${r.body}`);
  }
  // The scopes clients send still work.
  for (const scope of [undefined, { project: { id: 'local' } }, { project: { name: 'local', domain: { id: 'default' } } }, { project: { id: 'local', name: 'local' } }]) {
    const r = await token(scope);
    assert.equal(r.statusCode, 201, `${JSON.stringify(scope)} -> ${r.statusCode} ${r.body}`);
  }
});
