// The backend conformance suite: the same tests for every repository kind (file, Swift, S3 via s3api).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ObjectNotFoundError, StorageError, type Backend } from '../../src/storage/backend.js';
import { createObject, deleteObjects } from '../../src/storage/index.js';

export interface RepoUnderTest {
  name: string;
  backend: Backend;
  /** Size that must take the segmented path (SLO / multipart); the suite checks it was taken. */
  segmentedSize: number;
  /** Everything the store holds for this repository, at the store's own level (segments, parts included). */
  rawNames(): Promise<string[]>;
  /** User metadata of an object, names lower-cased; absent where the repository does not keep metadata (file). */
  metadataOf?(key: string): Promise<Record<string, string> | undefined>;
  /** Whether the object was stored in segments (SLO manifest, multipart ETag, ...); undefined: no such notion. */
  isSegmented(key: string): Promise<boolean | undefined>;
  /** The same repository with a tiny listing page, to prove paging. */
  withPageSize?(n: number): Promise<Backend>;
}

export async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer | string>) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks);
}

/** A stream of buf in odd-sized chunks (so chunk edges never line up with segment edges). */
export function streamOf(buf: Buffer, chunk = 100_003): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk);
  })());
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function keys(b: Backend, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of b.list(prefix)) out.push(o.key);
  return out;
}

export function backendConformance(setup: () => Promise<RepoUnderTest>, teardown?: () => Promise<void>): void {
  let repo: RepoUnderTest;
  let b: Backend;
  describe('backend conformance', () => {
    before(async () => {
      repo = await setup();
      b = repo.backend;
    });
    after(async () => {
      await b?.close();
      await teardown?.();
    });

    it('put/get round trip is byte-identical, small and empty', async () => {
      assert.ok(!/testing|secret/i.test(b.location), 'location holds no credentials');
      const data = randomBytes(300_001);
      const info = await b.put('rt/small', streamOf(data));
      assert.equal(info.size, data.length);
      assert.equal(sha256(await readAll(await b.get('rt/small'))), sha256(data));
      const empty = await b.put('rt/empty', Readable.from([]));
      assert.equal(empty.size, 0);
      assert.equal((await readAll(await b.get('rt/empty'))).length, 0);
      assert.equal((await b.stat('rt/empty'))?.size, 0);
    });

    it('ranged get', async () => {
      const data = randomBytes(200_000);
      await b.put('range/obj', streamOf(data));
      assert.deepEqual(await readAll(await b.get('range/obj', { offset: 1000, length: 5000 })), data.subarray(1000, 6000));
      assert.deepEqual(await readAll(await b.get('range/obj', { offset: 199_990 })), data.subarray(199_990));
      assert.deepEqual(await readAll(await b.get('range/obj', { offset: 0, length: 1 })), data.subarray(0, 1));
      assert.equal((await readAll(await b.get('range/obj', { offset: 5, length: 0 }))).length, 0);
      assert.equal((await readAll(await b.get('range/obj', { offset: 200_000 }))).length, 0);
    });

    it('createObject writes from buffers the caller reuses at once; abort leaves nothing', async () => {
      const a = randomBytes(300_001);
      const bytes = randomBytes(300_001);
      const w = await createObject(b, 'app/obj', { sizeHint: 600_002 });
      const buf = Buffer.from(a);
      await w.write(buf);
      bytes.copy(buf); // reused: the object must hold what was written, not what the buffer holds now
      await w.write(buf);
      assert.equal(await b.stat('app/obj'), undefined, 'not visible before commit');
      assert.equal((await w.commit()).size, 600_002);
      assert.equal(sha256(await readAll(await b.get('app/obj'))), sha256(Buffer.concat([a, bytes])));

      const dropped = await createObject(b, 'app/dropped');
      await dropped.write(randomBytes(10_000));
      await dropped.abort();
      assert.equal(await b.stat('app/dropped'), undefined);
      assert.deepEqual((await repo.rawNames()).filter((n) => n.includes('app/dropped')), []);
    });

    it('positional reads through open, where the driver has them', async (t) => {
      if (!b.open) return t.skip('this driver reads through streams only');
      const data = randomBytes(200_000);
      await b.put('pos/obj', streamOf(data));
      const h = await b.open('pos/obj');
      try {
        const buf = Buffer.alloc(5000);
        assert.equal(await h.readInto(buf, 1000), 5000);
        assert.deepEqual(buf, data.subarray(1000, 6000));
        assert.equal(await h.readInto(buf.subarray(0, 100), 199_990), 10, 'short only where the object ends');
        assert.deepEqual(buf.subarray(0, 10), data.subarray(199_990));
        assert.equal(await h.readInto(buf, 200_000), 0);
      } finally {
        await h.close();
      }
      await assert.rejects(b.open('missing/obj'), ObjectNotFoundError);
    });

    it('stat gives the size; a missing object is undefined', async () => {
      const data = randomBytes(12_345);
      await b.put('stat/obj', streamOf(data));
      const st = await b.stat('stat/obj');
      assert.equal(st?.key, 'stat/obj');
      assert.equal(st?.size, 12_345);
      assert.ok(st?.modified instanceof Date);
      assert.equal(await b.stat('stat/missing'), undefined);
    });

    it('a missing object: get rejects with ObjectNotFoundError, delete is no error', async () => {
      await assert.rejects(b.get('missing/obj'), ObjectNotFoundError);
      await assert.rejects(b.get('missing/obj', { offset: 3, length: 0 }), ObjectNotFoundError);
      await b.delete('missing/obj');
    });

    it('list with a prefix, in key order, with sizes', async () => {
      for (const k of ['ls/b/2', 'ls/a/1', 'ls/a/3', 'ls/ab/4', 'ls/a-z/5']) await b.put(k, streamOf(Buffer.from(k)));
      assert.deepEqual(await keys(b, 'ls/a/'), ['ls/a/1', 'ls/a/3']);
      assert.deepEqual(await keys(b, 'ls/a'), ['ls/a-z/5', 'ls/a/1', 'ls/a/3', 'ls/ab/4']);
      assert.deepEqual(await keys(b, 'ls/'), ['ls/a-z/5', 'ls/a/1', 'ls/a/3', 'ls/ab/4', 'ls/b/2']);
      assert.deepEqual(await keys(b, 'ls/nothing'), []);
      const sizes = [];
      for await (const o of b.list('ls/a/')) sizes.push(o.size);
      assert.deepEqual(sizes, [6, 6]);
    });

    it('list pages through long listings', async (t) => {
      if (!repo.withPageSize) return t.skip('no listing pages');
      const paged = await repo.withPageSize(2);
      const want = ['pg/0', 'pg/1', 'pg/2', 'pg/3', 'pg/4'];
      for (const k of want) await b.put(k, streamOf(Buffer.from(k)));
      assert.deepEqual(await keys(paged, 'pg/'), want);
      await paged.close();
    });

    it('metadata is kept with the object', async (t) => {
      if (!repo.metadataOf) return t.skip('this repository keeps no metadata');
      const metadata = { 'Backup-Id': 'b-1', 'Format-Version': '1', Datastore: 'couchdb', 'Datastore-Version': '3.5.0' };
      await b.put('meta/obj', streamOf(randomBytes(1000)), { metadata });
      const got = await repo.metadataOf('meta/obj');
      assert.equal(got?.['backup-id'], 'b-1');
      assert.equal(got?.['format-version'], '1');
      assert.equal(got?.['datastore'], 'couchdb');
      assert.equal(got?.['datastore-version'], '3.5.0');
      await assert.rejects(b.put('meta/bad', streamOf(Buffer.from('x')), { metadata: { 'bad name': 'x' } }), StorageError);
    });

    it('segmented path: large object round trip, ranged reads across segments, metadata, listing', async () => {
      const data = randomBytes(repo.segmentedSize);
      const metadata = { 'Backup-Id': 'big-1' };
      const info = await b.put('seg/big', streamOf(data), { metadata });
      assert.equal(info.size, data.length);
      assert.notEqual(await repo.isSegmented('seg/big'), false, 'stored in segments');
      assert.equal((await b.stat('seg/big'))?.size, data.length);
      assert.equal(sha256(await readAll(await b.get('seg/big'))), sha256(data));
      const mib = 1024 * 1024;
      assert.deepEqual(await readAll(await b.get('seg/big', { offset: mib - 10, length: mib + 20 })), data.subarray(mib - 10, 2 * mib + 10));
      assert.deepEqual(await readAll(await b.get('seg/big', { offset: data.length - 7 })), data.subarray(data.length - 7));
      if (repo.metadataOf) assert.equal((await repo.metadataOf('seg/big'))?.['backup-id'], 'big-1');
      const listed = [];
      for await (const o of b.list('seg/')) listed.push(o);
      assert.deepEqual(listed.map((o) => [o.key, o.size]), [['seg/big', data.length]], 'segments are not listed while their object exists');
    });

    it('overwriting replaces the object and leaves no stale segments', async () => {
      const first = randomBytes(repo.segmentedSize);
      const second = randomBytes(1000);
      await b.put('ow/obj', streamOf(first));
      await b.put('ow/obj', streamOf(second));
      assert.equal(sha256(await readAll(await b.get('ow/obj'))), sha256(second));
      await b.delete('ow/obj');
      assert.deepEqual((await repo.rawNames()).filter((n) => n.includes('ow/')), []);
    });

    it('a failing source: put rejects and nothing is visible or left behind', async () => {
      const data = randomBytes(repo.segmentedSize);
      const failing = Readable.from((async function* () {
        yield data.subarray(0, 3 * 1024 * 1024);
        yield data.subarray(3 * 1024 * 1024, 6 * 1024 * 1024);
        throw new Error('source broke');
      })());
      await assert.rejects(b.put('fail/obj', failing), /source broke/);
      assert.equal(await b.stat('fail/obj'), undefined);
      assert.deepEqual(await keys(b, 'fail/'), []);
      assert.deepEqual((await repo.rawNames()).filter((n) => n.includes('fail/')), []);
    });

    it('invalid keys are refused', async () => {
      for (const k of ['', '/abs', 'a//b', 'a/../b', 'a/./b']) {
        await assert.rejects(b.put(k, streamOf(Buffer.from('x'))), StorageError, JSON.stringify(k));
      }
    });

    it('delete leaves nothing behind, segments included', async () => {
      const all = await keys(b, '');
      assert.ok(all.length >= 10, `objects to delete: ${all.length}`);
      await b.delete('seg/big');
      assert.equal(await b.stat('seg/big'), undefined);
      await deleteObjects(b, (await keys(b, '')).filter((k) => k.startsWith('pg/') || k.startsWith('ls/')));
      for (const k of await keys(b, '')) await b.delete(k);
      assert.deepEqual(await keys(b, ''), []);
      assert.deepEqual(await repo.rawNames(), []);
    });
  });
}
