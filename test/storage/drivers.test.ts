// Driver logic that needs no server: S3 part sizing, Keystone v3 request bodies and catalog endpoints,
// repository URLs, size parsing, and that configuration errors never echo a secret.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { StorageError } from '../../src/storage/backend.js';
import { openStorage } from '../../src/storage/index.js';
import { choosePartSize, S3_MIN_PART } from '../../src/storage/s3/s3.js';
import { keystoneIdentity, pickObjectStoreEndpoint, swiftAuthFromEnv } from '../../src/storage/swift/auth.js';
import { parseSize, splitRepositoryUrl } from '../../src/storage/util.js';

const MiB = 1024 * 1024;

/** A loopback port nobody listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

describe('S3 part size', () => {
  it('keeps objects up to 500 GiB within 1,000 parts and 5 TiB within 10,000, never under 5 MiB', () => {
    assert.equal(choosePartSize(undefined), 64 * MiB);
    assert.equal(choosePartSize(1000), S3_MIN_PART);
    assert.equal(choosePartSize(12 * MiB), S3_MIN_PART);
    for (const size of [1 * GiB, 10 * GiB, 100 * GiB, 300 * GiB, 500 * GiB]) {
      const part = choosePartSize(size);
      assert.ok(Math.ceil(size / part) <= 1000, `${size / GiB} GiB in ${Math.ceil(size / part)} parts`);
      assert.ok(part >= S3_MIN_PART && part % MiB === 0);
    }
    for (const size of [501 * GiB, 1 * TiB, 5 * TiB]) {
      const part = choosePartSize(size);
      assert.ok(Math.ceil(size / part) <= 10000, `${size / GiB} GiB in ${Math.ceil(size / part)} parts`);
      assert.ok(part <= 5 * GiB);
    }
    assert.equal(choosePartSize(300 * GiB), 308 * MiB);
  });
});

describe('Keystone v3', () => {
  it('builds a project-scoped password request', () => {
    const body = keystoneIdentity({
      OS_USERNAME: 'alice', OS_PASSWORD: 'pw', OS_PROJECT_NAME: 'backups', OS_USER_DOMAIN_NAME: 'Users', OS_PROJECT_DOMAIN_NAME: 'Projects',
    });
    assert.deepEqual(body, {
      identity: { methods: ['password'], password: { user: { name: 'alice', domain: { name: 'Users' }, password: 'pw' } } },
      scope: { project: { name: 'backups', domain: { name: 'Projects' } } },
    });
    const byId = keystoneIdentity({ OS_USERNAME: 'a', OS_PASSWORD: 'p', OS_PROJECT_ID: 'p1' });
    assert.deepEqual(byId.scope, { project: { id: 'p1' } });
    assert.deepEqual((byId.identity as { password: { user: { domain: unknown } } }).password.user.domain, { id: 'default' });
    const ac = keystoneIdentity({ OS_APPLICATION_CREDENTIAL_ID: 'id', OS_APPLICATION_CREDENTIAL_SECRET: 's' });
    assert.deepEqual(ac, { identity: { methods: ['application_credential'], application_credential: { id: 'id', secret: 's' } } });
    assert.throws(() => keystoneIdentity({ OS_USERNAME: 'a', OS_PASSWORD: 'p' }), /OS_PROJECT_NAME/);
  });

  it('picks the object-store endpoint for the region and interface', () => {
    const catalog = [
      { type: 'identity', endpoints: [{ interface: 'public', region_id: 'r1', url: 'http://keystone' }] },
      {
        type: 'object-store',
        endpoints: [
          { interface: 'public', region_id: 'r1', url: 'https://swift-r1/v1/AUTH_p' },
          { interface: 'internal', region_id: 'r1', url: 'http://swift-r1-int/v1/AUTH_p' },
          { interface: 'public', region_id: 'r2', url: 'https://swift-r2/v1/AUTH_p' },
        ],
      },
    ];
    assert.equal(pickObjectStoreEndpoint(catalog, 'r2', 'public'), 'https://swift-r2/v1/AUTH_p');
    assert.equal(pickObjectStoreEndpoint(catalog, 'r1', 'internal'), 'http://swift-r1-int/v1/AUTH_p');
    assert.equal(pickObjectStoreEndpoint(catalog, 'r1', 'internalURL'), 'http://swift-r1-int/v1/AUTH_p');
    assert.throws(() => pickObjectStoreEndpoint(catalog, undefined, 'public'), /several regions.*OS_REGION_NAME/);
    assert.throws(() => pickObjectStoreEndpoint(catalog, 'r3', 'public'), /no public object-store endpoint in region r3/);
    assert.throws(() => pickObjectStoreEndpoint([], 'r1', 'public'), /no object-store service/);
  });
});

describe('configuration', () => {
  it('parses repository URLs', () => {
    assert.deepEqual(splitRepositoryUrl(new URL('swift://backups/db1/prod'), 'swift'), { container: 'backups', prefix: 'db1/prod/' });
    assert.deepEqual(splitRepositoryUrl(new URL('s3://bucket'), 's3'), { container: 'bucket', prefix: '' });
    assert.deepEqual(splitRepositoryUrl(new URL('s3://bucket/'), 's3'), { container: 'bucket', prefix: '' });
    assert.throws(() => splitRepositoryUrl(new URL('swift://user:pw@c/p'), 'swift'), /must not hold credentials/);
    assert.throws(() => splitRepositoryUrl(new URL('swift://c:8080/p'), 'swift'), /no port/);
  });

  it('parses sizes', () => {
    assert.equal(parseSize('1GiB', 'x'), GiB);
    assert.equal(parseSize('64M', 'x'), 64 * MiB);
    assert.equal(parseSize('1048576', 'x'), MiB);
    assert.equal(parseSize('5 MB', 'x'), 5_000_000);
    assert.throws(() => parseSize('lots', 'COUCHTROVE_SWIFT_SEGMENT_SIZE'), /COUCHTROVE_SWIFT_SEGMENT_SIZE: invalid size/);
  });

  it('says which Swift variables are missing, without echoing values', async () => {
    assert.throws(() => swiftAuthFromEnv({}), /ST_AUTH, ST_USER and ST_KEY.*OS_AUTH_URL/);
    assert.throws(() => swiftAuthFromEnv({ ST_AUTH: 'http://127.0.0.1:1/auth/v1.0', ST_USER: 'u' }), /ST_KEY is missing/);
    const port = await closedPort();
    const err = await openStorage('swift://c/p', { ST_AUTH: `http://127.0.0.1:${port}/auth/v1.0`, ST_USER: 'test:tester', ST_KEY: 'sup3rs3cret' }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    assert.ok(err instanceof StorageError);
    assert.equal(err.message, `Swift auth v1 at http://127.0.0.1:${port}/auth/v1.0: connection refused (ECONNREFUSED)`);
    assert.doesNotMatch(err.message + String(err.stack), /sup3rs3cret|test:tester/);
  });

  it('refuses unknown schemes and half-given S3 keys', async () => {
    await assert.rejects(openStorage('ftp://x/y'), /unsupported storage URL scheme/);
    await assert.rejects(openStorage('s3://b/p', { AWS_ACCESS_KEY_ID: 'AKIA' }), /both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  });
});
