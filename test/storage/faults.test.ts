// Faults on a real Swift: the proxy killed in the middle of an upload, and memcached restarted in the middle
// of an upload (tempauth forgets every token, so the driver must authenticate again and go on).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { StorageError, type Backend } from '../../src/storage/backend.js';
import { deleteObjects } from '../../src/storage/index.js';
import { withRetries } from '../../src/storage/retry.js';
import { openSwiftBackend } from '../../src/storage/swift/swift.js';
import { openS3Backend } from '../../src/storage/s3/s3.js';
import { rawSwiftNames, startSwift, type SwiftServer } from '../support/swift.js';
import { readAll, sha256 } from './suite.js';

const MiB = 1024 * 1024;

/** data in 256 KiB chunks; `at(bytesSoFar)` runs (and is awaited) before each chunk. */
function source(data: Buffer, at: (sent: number) => Promise<void>): Readable {
  return Readable.from((async function* () {
    for (let i = 0; i < data.length; i += 256 * 1024) {
      await at(i);
      yield data.subarray(i, i + 256 * 1024);
    }
  })());
}

async function keys(b: Backend, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of b.list(prefix)) out.push(o.key);
  return out;
}

let server: SwiftServer;
before(async () => {
  server = await startSwift({ maxFileSize: 6 * MiB });
});
after(() => server?.stop());

for (const mode of ['memory', 'streamed'] as const) describe(`Swift faults, ${mode} segments`, () => {
  // memory: 1 MiB segments kept in memory, two uploading at a time; streamed: each segment sent as it is read
  // and spooled to a file for retries.
  const spool = mode === 'streamed' ? { memorySpoolLimit: 256 * 1024 } : {};
  it('proxy killed mid-upload: put rejects clearly, nothing is visible, leftovers are listed and deletable', async (t) => {
    const url = new URL(`swift://faults/kill-${mode}`);
    const swift = await openSwiftBackend(url, server.swiftEnv(), { segmentSize: MiB, retry: { attempts: 3, baseDelayMs: 100 }, ...spool });
    const data = randomBytes(10 * MiB);
    let killed = false;
    const started = Date.now();
    const err = await swift.put('backups/b1/data/000001', source(data, async (sent) => {
      if (sent >= 3 * MiB && !killed) {
        killed = true;
        await server.kill('proxy');
      }
    })).then(() => undefined, (e: unknown) => e).finally(async () => {
      if (killed) await server.start('proxy');
    });
    assert.ok(killed);
    assert.ok(err instanceof StorageError, `rejected with a StorageError: ${String(err)}`);
    const message = (err as Error).message;
    t.diagnostic(`error: ${message}`);
    assert.match(message, /backups\/b1\/data\/000001/, 'names the object');
    assert.match(message, /connection refused|connection reset|closed/, 'says why');
    assert.match(message, /swift:\/\/faults\/kill-/, 'says where');
    assert.doesNotMatch(message, /testing|AUTH_tk|X-Auth/i, 'no credentials or tokens');
    assert.ok(Date.now() - started < 30_000, 'gives up in bounded time');

    assert.equal(await swift.stat('backups/b1/data/000001'), undefined, 'no visible object');
    // What could not be cleaned up is reported: every name left is a segment of the failed object, listed.
    const left = await keys(swift, 'backups/b1/');
    for (const k of left) assert.ok(k.startsWith('backups/b1/data/000001.segments/'), k);
    if (left.length) assert.match(message, /segments could not be removed and remain under/);
    assert.deepEqual(left.map((k) => `kill-${mode}/${k}`), await rawSwiftNames(server, 'faults', `kill-${mode}/`), 'list shows everything stored');
    await deleteObjects(swift, left);
    assert.deepEqual(await rawSwiftNames(server, 'faults', `kill-${mode}/`), []);
    await swift.close();
  });

  it('memcached restarted mid-upload: the driver authenticates again and the upload completes', async () => {
    const storage = withRetries(await openSwiftBackend(new URL(`swift://faults/reauth-${mode}`), server.swiftEnv(), { segmentSize: MiB, ...spool }));
    const data = randomBytes(9 * MiB + 17);
    let restarted = false;
    const logBefore = await readFile(path.join(server.dir, 'log', 'proxy.log'), 'utf8');
    const info = await storage.put('obj', source(data, async (sent) => {
      if (sent >= 3 * MiB && !restarted) {
        restarted = true;
        await server.restart('memcached');
      }
    }));
    assert.ok(restarted);
    assert.equal(info.size, data.length);
    assert.equal(sha256(await readAll(await storage.get('obj'))), sha256(data));
    // The proxy's access log shows the rejected token and the new login.
    const log = (await readFile(path.join(server.dir, 'log', 'proxy.log'), 'utf8')).slice(logBefore.length);
    assert.match(log, new RegExp(`PUT /v1/AUTH_test/faults/reauth-${mode}/obj\\.segments/\\S+ HTTP/1\\.[01] 401`), 'a segment PUT was refused with 401');
    assert.match(log, /GET \/auth\/v1\.0 HTTP\/1\.[01] 200/, 'then a new token was obtained');
    await storage.delete('obj');
    assert.deepEqual(await rawSwiftNames(server, 'faults', `reauth-${mode}/`), []);
    await storage.close();
  });
});

describe('Swift 5xx', () => {
  it('object server down for a while: the 503s are retried with backoff and the upload completes', async () => {
    // A generous retry budget: restarting the object server takes seconds on a loaded 2-core machine.
    const swift = await openSwiftBackend(new URL('swift://faults/503'), server.swiftEnv(), { segmentSize: MiB, retry: { attempts: 14, baseDelayMs: 200, maxDelayMs: 4000 } });
    const data = randomBytes(4 * MiB + 3);
    let down = false;
    let back: Promise<void> | undefined;
    const logBefore = await readFile(path.join(server.dir, 'log', 'proxy.log'), 'utf8');
    await swift.put('obj', source(data, async (sent) => {
      if (sent >= MiB && !down) {
        down = true;
        await server.kill('object');
        back = new Promise((resolve, reject) => setTimeout(() => server.start('object').then(resolve, reject), 1500));
      }
    })).finally(() => back);
    assert.ok(down);
    const log = (await readFile(path.join(server.dir, 'log', 'proxy.log'), 'utf8')).slice(logBefore.length);
    assert.match(log, /PUT \/v1\/AUTH_test\/faults\/503\/obj\.segments\/\S+ HTTP\/1\.[01] 503/, 'Swift answered 503 meanwhile');
    assert.equal(sha256(await readAll(await swift.get('obj'))), sha256(data));
    await swift.delete('obj');
    assert.deepEqual(await rawSwiftNames(server, 'faults', '503/'), []);
    await swift.close();
  });
});

describe('S3 faults', () => {
  it('S3: proxy killed mid multipart upload: put rejects clearly and nothing is visible', async (t) => {
    const env = { ...server.s3Env(), AWS_MAX_ATTEMPTS: '2' };
    const s3 = await openS3Backend(new URL('s3://faults-s3/kill'), env, { partSize: 5 * MiB });
    // Creates the bucket; the servers restarted by the tests above may still be warming up.
    for (let i = 0; ; i++) {
      try {
        await s3.put('warmup', Readable.from([Buffer.from('x')]));
        break;
      } catch (err) {
        if (i >= 30) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    const data = randomBytes(16 * MiB);
    let killed = false;
    const err = await s3.put('big', source(data, async (sent) => {
      if (sent >= 7 * MiB && !killed) {
        killed = true;
        await server.kill('proxy');
      }
    })).then(() => undefined, (e: unknown) => e).finally(async () => {
      if (killed) await server.start('proxy');
    });
    assert.ok(err instanceof StorageError, `rejected with a StorageError: ${String(err)}`);
    t.diagnostic(`error: ${(err as Error).message}`);
    assert.match((err as Error).message, /writing big .*in s3:\/\/faults-s3\/kill\/ at http:\/\/127\.0\.0\.1:\d+ failed: .*ECONNREFUSED|ECONNRESET|socket/);
    assert.doesNotMatch((err as Error).message, /testing/);
    assert.equal(await s3.stat('big'), undefined);
    assert.deepEqual(await keys(s3, ''), ['warmup']);
    // An unfinished multipart upload is invisible to listings; S3 reports it through ListMultipartUploads.
    const mpu = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: 'faults-s3', Prefix: 'kill/' }));
    for (const u of mpu.Uploads ?? []) {
      await s3.client.send(new AbortMultipartUploadCommand({ Bucket: 'faults-s3', Key: u.Key!, UploadId: u.UploadId! }));
    }
    await s3.delete('warmup');
    await s3.close();
  });
});
