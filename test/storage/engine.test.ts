// The backup engine over the three repository kinds (file, a real Swift, S3 through Swift's s3api), and the
// `couchtrove agent` CLI on swift:// and s3://. Swift's max_file_size is 6 MiB and the segment and part sizes
// are small (1 MiB, 5 MiB) so the ~9 MiB data object of the v1 fixture takes the segmented paths.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createBackup, deleteBackup, listBackups, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { keys } from '../../src/backup/format.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import type { Backend, ObjectInfo, PutOptions, Range } from '../../src/storage/backend.js';
import { openStorage } from '../../src/storage/index.js';
import { runCli } from '../support/cli.js';
import { expectedFiles, extractDatadir } from '../support/fixtures.js';
import { rawSwiftNames, startSwift, type SwiftServer } from '../support/swift.js';
import { readTree, tempDir } from '../support/tree.js';
import { readAll } from './suite.js';

const MiB = 1024 * 1024;
let server: SwiftServer;
let work: Awaited<ReturnType<typeof tempDir>>;
let src = '';
const run = randomBytes(3).toString('hex');

before(async () => {
  [server, work] = await Promise.all([startSwift({ maxFileSize: 6 * MiB }), tempDir('engine-storage')]);
  src = await extractDatadir('v1', path.join(work.dir, 'src'));
});
after(async () => {
  await server?.stop();
  await work?.cleanup();
});

/** Calls `during` once, when `after` bytes of a put's body have gone by: faults in the middle of an upload. */
class Tap implements Backend {
  constructor(private readonly inner: Backend, private readonly afterBytes: number, private readonly during: () => Promise<void>) {}
  fired = false;
  get location(): string {
    return this.inner.location;
  }
  put(key: string, body: Readable, options?: PutOptions): Promise<ObjectInfo> {
    let seen = 0;
    const tap = async (): Promise<void> => {
      if (!this.fired && seen >= this.afterBytes) {
        this.fired = true;
        await this.during();
      }
    };
    const tapped = Readable.from((async function* () {
      for await (const c of body as AsyncIterable<Buffer>) {
        seen += c.length;
        await tap();
        yield c;
      }
    })());
    return this.inner.put(key, tapped, options);
  }
  get(key: string, range?: Range): Promise<Readable> {
    return this.inner.get(key, range);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Repo {
  url: string;
  env(): NodeJS.ProcessEnv;
  /** Everything stored for the repository at the store's level (segments and parts included). */
  raw(): Promise<string[]>;
}

const repos: Record<string, () => Repo> = {
  file: () => ({ url: `file://${work.dir}/file-repo`, env: () => ({}), raw: async () => (await readTree(path.join(work.dir, 'file-repo')).catch(() => ({ files: [] }))).files.map((f) => f.path) }),
  swift: () => ({
    url: `swift://engine-${run}/repo`,
    env: () => ({ ...server.swiftEnv(), COUCHTROVE_SWIFT_SEGMENT_SIZE: '1MiB' }),
    raw: () => rawSwiftNames(server, `engine-${run}`, 'repo/'),
  }),
  s3: () => ({
    url: `s3://engine-s3-${run}/repo`,
    env: () => ({ ...server.s3Env(), COUCHTROVE_S3_PART_SIZE: '5MiB' }),
    raw: async () => [...(await rawSwiftNames(server, `engine-s3-${run}`, 'repo/')), ...(await rawSwiftNames(server, `engine-s3-${run}+segments`, 'repo/'))],
  }),
};

const key = new KeyMaterial(randomBytes(32));

for (const [name, make] of Object.entries(repos)) {
  describe(`backup engine on ${name}`, () => {
    let repo: Repo;
    let storage: Backend;
    let id = '';
    before(async () => {
      repo = make();
      storage = await openStorage(repo.url, repo.env());
    });
    after(() => storage?.close());

    it('backup, verify and restore give a byte-identical tree', async () => {
      const summary = await createBackup({ dataDir: src, storage, key, compression: 'none', recordSize: 256 * 1024 });
      id = summary.id;
      const expected = expectedFiles('v1');
      assert.equal(summary.files, expected.length);
      assert.ok(summary.size > 6 * MiB, `data stored in segments: ${summary.size} bytes`);
      assert.equal((await verifyBackup({ storage, id, key })).files.length, expected.length);
      const dst = path.join(work.dir, `${name}-restored`);
      await restoreBackup({ storage, id, dataDir: dst, key });
      const tree = await readTree(dst);
      assert.deepEqual(tree.files.map((f) => [f.path, f.size, f.sha256]), expected.map((f) => [f.path, f.size, f.sha256]));
      const listed = await listBackups(storage, key);
      assert.deepEqual(listed.backups.map((b) => b.id), [id]);
      assert.deepEqual(listed.incomplete, []);
    });

    it('a corrupted data object is detected by verify and restore', async () => {
      const original = await readAll(await storage.get(keys.data(id)));
      const bad = Buffer.from(original);
      bad[Math.floor(bad.length / 2)]! ^= 0x01;
      await storage.put(keys.data(id), Readable.from([bad]));
      await assert.rejects(verifyBackup({ storage, id, key }), new RegExp(`wrong key or corrupted data: object backups/${id}/data`));
      await assert.rejects(restoreBackup({ storage, id, dataDir: path.join(work.dir, `${name}-bad`), key }), /corrupted data/);
      await storage.put(keys.data(id), Readable.from([original]));
      await verifyBackup({ storage, id, key });
    });

    it('a missing data object is detected by verify and restore', async () => {
      const original = await readAll(await storage.get(keys.data(id)));
      await storage.delete(keys.data(id));
      await assert.rejects(verifyBackup({ storage, id, key }), new RegExp(`object backups/${id}/data .*is missing`));
      await assert.rejects(restoreBackup({ storage, id, dataDir: path.join(work.dir, `${name}-missing`), key }), /is missing/);
      await storage.put(keys.data(id), Readable.from([original]));
    });

    it('delete leaves nothing behind', async () => {
      await deleteBackup(storage, id);
      assert.deepEqual(await listBackups(storage, key), { backups: [], unverified: [], incomplete: [] });
      assert.deepEqual((await repo.raw()).filter((n) => n.includes('backups/')), []);
    });
  });
}

describe('backup engine on Swift, with faults', () => {
  it('proxy killed mid-backup: a clear error, no usable backup, the leftovers reported and deletable', async (t) => {
    const url = `swift://engine-kill-${run}/repo`;
    const env = { ...server.swiftEnv(), COUCHTROVE_SWIFT_SEGMENT_SIZE: '1MiB' };
    const storage = await openStorage(url, env);
    const tap = new Tap(storage, 3 * MiB, () => server.kill('proxy'));
    const err = await createBackup({ dataDir: src, storage: tap, key, compression: 'none', recordSize: 256 * 1024 })
      .then(() => undefined, (e: unknown) => e as Error)
      .finally(() => (tap.fired ? server.start('proxy') : undefined));
    assert.ok(tap.fired);
    assert.ok(err instanceof Error, 'backup failed');
    t.diagnostic(`error: ${err.message}`);
    assert.match(err.message, /backups\/[^/]+\/data/);
    assert.match(err.message, /connection refused|connection reset|closed/);
    assert.doesNotMatch(err.message, /testing|AUTH_tk/);
    const { backups, incomplete } = await listBackups(storage);
    assert.deepEqual(backups, [], 'nothing usable is listed');
    const stored = await rawSwiftNames(server, `engine-kill-${run}`, 'repo/backups/');
    if (stored.length) {
      assert.equal(incomplete.length, 1, 'what is stored is reported');
      assert.equal(incomplete[0]!.objects, stored.length, 'every stored object is counted');
      await deleteBackup(storage, incomplete[0]!.id);
    }
    assert.deepEqual(await rawSwiftNames(server, `engine-kill-${run}`, 'repo/backups/'), []);
    await storage.close();
  });

  it('memcached restarted mid-backup: the backup completes and restores', async () => {
    const storage = await openStorage(`swift://engine-reauth-${run}/repo`, { ...server.swiftEnv(), COUCHTROVE_SWIFT_SEGMENT_SIZE: '1MiB' });
    const tap = new Tap(storage, 3 * MiB, () => server.restart('memcached'));
    const summary = await createBackup({ dataDir: src, storage: tap, key, compression: 'none', recordSize: 256 * 1024 });
    assert.ok(tap.fired);
    const dst = path.join(work.dir, 'reauth-restored');
    await restoreBackup({ storage, id: summary.id, dataDir: dst, key });
    const tree = await readTree(dst);
    assert.deepEqual(tree.files.map((f) => [f.path, f.sha256]), expectedFiles('v1').map((f) => [f.path, f.sha256]));
    await deleteBackup(storage, summary.id);
    await storage.close();
  });
});

describe('couchtrove agent CLI on object stores', () => {
  for (const kind of ['swift', 's3'] as const) {
    it(`backup, list, verify, restore and delete with --storage ${kind}://`, async () => {
      const url = kind === 'swift' ? `swift://cli-${run}/prod/db1` : `s3://cli-s3-${run}/prod/db1`;
      const env = kind === 'swift' ? { ...server.swiftEnv(), COUCHTROVE_SWIFT_SEGMENT_SIZE: '1MiB' } : server.s3Env();
      const keyFile = path.join(work.dir, `cli-${kind}.key`);
      const keygen = await runCli(['agent', 'keygen', '--out', keyFile]);
      assert.equal(keygen.code, 0, keygen.stderr);
      const backup = await runCli(['agent', 'backup', '--data-dir', src, '--storage', url, '--key-file', keyFile, '--json'], env);
      assert.equal(backup.code, 0, backup.stderr);
      const summary = JSON.parse(backup.stdout) as { id: string; files: number };
      assert.equal(summary.files, expectedFiles('v1').length);
      const list = await runCli(['agent', 'list', '--storage', url, '--key-file', keyFile, '--json'], env);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(summary.id));
      const verify = await runCli(['agent', 'verify', '--storage', url, '--backup', summary.id, '--key-file', keyFile, '--json'], env);
      assert.equal(verify.code, 0, verify.stderr);
      const dst = path.join(work.dir, `cli-${kind}-restored`);
      const restore = await runCli(['agent', 'restore', '--storage', url, '--backup', summary.id, '--data-dir', dst, '--key-file', keyFile, '--json'], env);
      assert.equal(restore.code, 0, restore.stderr);
      const tree = await readTree(dst);
      assert.deepEqual(tree.files.map((f) => [f.path, f.sha256]), expectedFiles('v1').map((f) => [f.path, f.sha256]));
      const del = await runCli(['agent', 'delete', '--storage', url, '--backup', summary.id], env);
      assert.equal(del.code, 0, del.stderr);
      for (const r of [backup, list, verify, restore, del]) assert.doesNotMatch(r.stdout + r.stderr, /testing|AUTH_tk/, 'no secret printed');
      const bad = await runCli(['agent', 'list', '--storage', url], { ...env, ST_KEY: 'wrong', AWS_SECRET_ACCESS_KEY: 'wrong' });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, kind === 'swift' ? /rejected the credentials \(HTTP 401\); check ST_USER and ST_KEY/ : /SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403/);
      assert.doesNotMatch(bad.stderr, /wrong/);
    });
  }
});
