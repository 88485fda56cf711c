// The retry wrapper around a real file repository, with faults injected between the two: transient errors on
// open, a download that breaks in the middle (resumed from the first missing byte), a listing that breaks.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ObjectNotFoundError, type Backend, type ObjectInfo, type PutOptions, type Range } from '../../src/storage/backend.js';
import { openStorage } from '../../src/storage/index.js';
import { backoffDelay, isTransientError, retry, withRetries } from '../../src/storage/retry.js';
import { storageError } from '../../src/storage/util.js';
import { readAll, sha256, streamOf } from './suite.js';

const reset = (): Error => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });

/** Passes calls to a real backend, failing the next `fail.*` calls with ECONNRESET. */
class Faulty implements Backend {
  fail = { get: 0, stat: 0, list: 0, delete: 0, breakBodyAt: -1, breakListAfter: -1 };
  calls: { get: Range[] } = { get: [] };
  constructor(private readonly inner: Backend) {}
  get location(): string {
    return this.inner.location;
  }
  put(key: string, body: Readable, options?: PutOptions): Promise<ObjectInfo> {
    return this.inner.put(key, body, options);
  }
  async get(key: string, range?: Range): Promise<Readable> {
    this.calls.get.push(range ?? { offset: 0 });
    if (this.fail.get-- > 0) throw reset();
    const body = await this.inner.get(key, range);
    const breakAt = this.fail.breakBodyAt;
    if (breakAt < 0) return body;
    this.fail.breakBodyAt = -1;
    return Readable.from((async function* () {
      let sent = 0;
      for await (const c of body as AsyncIterable<Buffer>) {
        if (sent + c.length > breakAt) {
          yield c.subarray(0, breakAt - sent);
          body.destroy();
          throw reset();
        }
        sent += c.length;
        yield c;
      }
    })());
  }
  async stat(key: string): Promise<ObjectInfo | undefined> {
    if (this.fail.stat-- > 0) throw reset();
    return this.inner.stat(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (this.fail.list-- > 0) throw reset();
    let n = 0;
    for await (const o of this.inner.list(prefix)) {
      if (n++ === this.fail.breakListAfter) {
        this.fail.breakListAfter = -1;
        throw reset();
      }
      yield o;
    }
  }
  async delete(key: string): Promise<void> {
    if (this.fail.delete-- > 0) throw reset();
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('retry wrapper', () => {
  let dir = '';
  let faulty: Faulty;
  let b: Backend;
  const data = randomBytes(3 * 1024 * 1024 + 7);
  const policy = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'couchtrove-retry-'));
    faulty = new Faulty(await openStorage(`file://${dir}`));
    b = withRetries(faulty, policy);
    await b.put('obj', streamOf(data));
    for (const k of ['l/1', 'l/2', 'l/3', 'l/4']) await b.put(k, streamOf(Buffer.from(k)));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('classifies errors', () => {
    assert.equal(isTransientError(reset()), true);
    assert.equal(isTransientError(new TypeError('fetch failed', { cause: reset() })), true);
    assert.equal(isTransientError(storageError('HTTP 503', { transient: true })), true);
    assert.equal(isTransientError(storageError('gave up', { transient: false, cause: reset() })), false, 'a final error is not retried again');
    assert.equal(isTransientError(new ObjectNotFoundError('x', 'k')), false);
    assert.equal(isTransientError(new Error('bad request')), false);
    for (let i = 1; i < 12; i++) assert.ok(backoffDelay(i, { baseDelayMs: 100, maxDelayMs: 1000 }) <= 1000);
  });

  it('retry gives up after the tries and returns the last error', async () => {
    let n = 0;
    await assert.rejects(retry('op', async () => {
      n++;
      throw reset();
    }, policy), /ECONNRESET/);
    assert.equal(n, 4);
    n = 0;
    await assert.rejects(retry('op', async () => {
      n++;
      throw new Error('permanent');
    }, policy), /permanent/);
    assert.equal(n, 1);
  });

  it('get, stat and delete are retried on transient errors', async () => {
    faulty.fail.get = 2;
    assert.equal(sha256(await readAll(await b.get('obj'))), sha256(data));
    faulty.fail.stat = 3;
    assert.equal((await b.stat('obj'))?.size, data.length);
    faulty.fail.stat = 9;
    await assert.rejects(b.stat('obj'), /ECONNRESET/);
    faulty.fail.stat = 0;
    await assert.rejects(b.get('missing'), ObjectNotFoundError);
  });

  it('a download that breaks midway is resumed from the first missing byte', async () => {
    faulty.calls.get = [];
    faulty.fail.breakBodyAt = 1_234_567;
    assert.equal(sha256(await readAll(await b.get('obj'))), sha256(data));
    assert.deepEqual(faulty.calls.get.map((r) => r.offset), [0, 1_234_567]);
    faulty.calls.get = [];
    faulty.fail.breakBodyAt = 1000;
    const part = await readAll(await b.get('obj', { offset: 500_000, length: 100_000 }));
    assert.deepEqual(part, data.subarray(500_000, 600_000));
    assert.deepEqual(faulty.calls.get, [{ offset: 500_000, length: 100_000 }, { offset: 501_000, length: 99_000 }]);
  });

  it('a listing that breaks starts again after the last key given', async () => {
    faulty.fail.breakListAfter = 2;
    const got: string[] = [];
    for await (const o of b.list('l/')) got.push(o.key);
    assert.deepEqual(got, ['l/1', 'l/2', 'l/3', 'l/4']);
    faulty.fail.list = 1;
    got.length = 0;
    for await (const o of b.list('l/')) got.push(o.key);
    assert.deepEqual(got, ['l/1', 'l/2', 'l/3', 'l/4']);
  });

  it('delete is retried', async () => {
    faulty.fail.delete = 2;
    await b.delete('l/1');
    assert.equal(await b.stat('l/1'), undefined);
  });
});
