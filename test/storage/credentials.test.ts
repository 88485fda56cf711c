// The object store's credentials for an agent in a container (src/storage/credentials.ts): the repository's
// variables picked from the control plane's environment, loopback endpoints moved to docker_storage_address,
// the 0400 file read back by the agent, and anything else in it refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCredentialsFile, repositoryCredentials, storageEnv, useCredentialsFile } from '../../src/storage/credentials.js';
import { loadServerConfig } from '../../src/config/server.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-creds-'));
after(() => {
  useCredentialsFile(undefined);
  fs.rmSync(dir, { recursive: true, force: true });
});

const env = {
  ST_AUTH: 'http://127.0.0.1:8080/auth/v1.0', ST_USER: 'test:tester', ST_KEY: 'swift-secret',
  AWS_ENDPOINT_URL: 'http://localhost:8080', AWS_ACCESS_KEY_ID: 'ak', AWS_SECRET_ACCESS_KEY: 's3-secret', AWS_REGION: 'us-east-1',
  COUCHTROVE_S3_FORCE_PATH_STYLE: 'true', PATH: '/usr/bin', HOME: '/root', COUCHTROVE_STATE_DIR: '/x',
};

test('the repository scheme picks its variables; loopback endpoints go to the configured address', () => {
  assert.deepEqual(repositoryCredentials('swift://backups/p', env, '10.0.0.1'), { ST_AUTH: 'http://10.0.0.1:8080/auth/v1.0', ST_USER: 'test:tester', ST_KEY: 'swift-secret' });
  assert.deepEqual(repositoryCredentials('s3://bucket', env, 'storage.example.org'), {
    AWS_ENDPOINT_URL: 'http://storage.example.org:8080/', AWS_ACCESS_KEY_ID: 'ak', AWS_SECRET_ACCESS_KEY: 's3-secret', AWS_REGION: 'us-east-1', COUCHTROVE_S3_FORCE_PATH_STYLE: 'true',
  });
  assert.equal(repositoryCredentials('s3://bucket', { ...env, AWS_ENDPOINT_URL: 'http://[::1]:9000' }, 'fd00::5')?.AWS_ENDPOINT_URL, 'http://[fd00::5]:9000/');
  // An endpoint elsewhere is passed as it is, with or without an address.
  const remote = { ...env, ST_AUTH: 'https://swift.example.org/auth/v1.0' };
  assert.equal(repositoryCredentials('swift://c', remote)?.ST_AUTH, 'https://swift.example.org/auth/v1.0');
  assert.equal(repositoryCredentials('swift://c', remote, '10.0.0.1')?.ST_AUTH, 'https://swift.example.org/auth/v1.0');
  // Keystone: the application credential, the auth URL moved.
  assert.deepEqual(repositoryCredentials('swift://c', { OS_AUTH_URL: 'http://127.0.0.1:5000/v3', OS_APPLICATION_CREDENTIAL_ID: 'id', OS_APPLICATION_CREDENTIAL_SECRET: 'sec', OS_PASSWORD: '' }, '10.1.1.1'), {
    OS_AUTH_URL: 'http://10.1.1.1:5000/v3', OS_APPLICATION_CREDENTIAL_ID: 'id', OS_APPLICATION_CREDENTIAL_SECRET: 'sec',
  });
  assert.equal(repositoryCredentials('file:///srv/backups', env), null);
});

test('a loopback endpoint without docker_storage_address is refused, naming the variable and the setting', () => {
  assert.throws(() => repositoryCredentials('swift://c', env), /ST_AUTH names 127\.0\.0\.1, which an instance's container cannot reach: set docker_storage_address/);
  assert.throws(() => repositoryCredentials('s3://b', env), /AWS_ENDPOINT_URL names localhost/);
  assert.throws(() => repositoryCredentials('s3://b', { AWS_ENDPOINT_URL: 'not a url' }, '10.0.0.1'), /AWS_ENDPOINT_URL is not a URL/);
});

test('the agent reads the file (0600 or narrower, storage variables only) over its environment at each open', async () => {
  const f = path.join(dir, 'storage.json');
  fs.writeFileSync(f, JSON.stringify({ ST_AUTH: 'http://10.0.0.1:1/auth/v1.0', ST_USER: 'u', ST_KEY: 'k' }), { mode: 0o400 });
  assert.deepEqual(await readCredentialsFile(f), { ST_AUTH: 'http://10.0.0.1:1/auth/v1.0', ST_USER: 'u', ST_KEY: 'k' });
  useCredentialsFile(f);
  assert.equal((await storageEnv('swift://c/p')).ST_KEY, 'k');
  assert.equal((await storageEnv('swift://c/p')).PATH, process.env.PATH);
  // file:// needs none: the file is not even read.
  assert.equal(await storageEnv('file:///srv/x'), process.env);
  // A new copy takes effect at the next open.
  fs.chmodSync(f, 0o600);
  fs.writeFileSync(f, JSON.stringify({ ST_AUTH: 'http://10.0.0.1:1/auth/v1.0', ST_USER: 'u', ST_KEY: 'k2' }));
  assert.equal((await storageEnv('swift://c/p')).ST_KEY, 'k2');

  const bad = async (content: string, mode: number, re: RegExp): Promise<void> => {
    const g = path.join(dir, `bad-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(g, content, { mode });
    fs.chmodSync(g, mode);
    await assert.rejects(readCredentialsFile(g), re);
  };
  await bad('{"ST_KEY":"k"}', 0o644, /readable by others \(mode 644\)/);
  await bad('{"NODE_OPTIONS":"--require /tmp/x.js"}', 0o400, /"NODE_OPTIONS" is not a storage variable/);
  await bad('{"ST_KEY":1}', 0o400, /ST_KEY must be a string/);
  await bad('[1]', 0o400, /must be a JSON object/);
  await bad('{', 0o400, /are not JSON/);
  await assert.rejects(readCredentialsFile(path.join(dir, 'absent.json')), /credentials .*absent\.json are missing/);
  useCredentialsFile(path.join(dir, 'absent.json'));
  await assert.rejects(storageEnv('s3://b'), /are missing/);
});

test('docker_storage_address: an IP address or a host name, never a loopback', () => {
  const load = (v: string) => loadServerConfig({ env: { COUCHTROVE_DOCKER_STORAGE_ADDRESS: v }, overrides: { stateDir: dir } });
  assert.equal(load('10.215.3.1').dockerStorageAddress, '10.215.3.1');
  assert.equal(load('swift.internal.example.org').dockerStorageAddress, 'swift.internal.example.org');
  assert.equal(loadServerConfig({ env: {}, overrides: { stateDir: dir } }).dockerStorageAddress, undefined);
  assert.throws(() => load('127.0.0.1'), /docker_storage_address: 127\.0\.0\.1 is a container's own loopback/);
  assert.throws(() => load('http://x'), /docker_storage_address: expected an IP address or a host name/);
});
