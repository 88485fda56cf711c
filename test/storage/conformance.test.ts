// One conformance suite on three repositories: file://, swift:// (a real Swift all-in-one) and s3:// (the same
// Swift through its s3api middleware). Swift runs with max_file_size = 6 MiB, so the segmented paths
// (SLO with 1 MiB segments, S3 multipart with 5 MiB parts) are not only taken but required.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { openStorage } from '../../src/storage/index.js';
import { RetryingBackend, withRetries } from '../../src/storage/retry.js';
import { openSwiftBackend, type SwiftBackend } from '../../src/storage/swift/swift.js';
import { openS3Backend, type S3Backend } from '../../src/storage/s3/s3.js';
import { rawSwiftNames, startSwift } from '../support/swift.js';
import { backendConformance, readAll, sha256, streamOf } from './suite.js';

const MiB = 1024 * 1024;
const server = await startSwift({ maxFileSize: 6 * MiB });
after(() => server.stop());

const run = randomBytes(4).toString('hex');

describe('file://', () => {
  let dir = '';
  backendConformance(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'couchtrove-conf-'));
    const backend = await openStorage(`file://${dir}/repo`);
    const walk = async (d: string, rel = ''): Promise<string[]> => {
      const out: string[] = [];
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) out.push(...(await walk(path.join(d, e.name), r)));
        else out.push(r);
      }
      return out;
    };
    return {
      name: 'file',
      backend,
      segmentedSize: 7 * MiB + 123,
      rawNames: () => walk(path.join(dir, 'repo')),
      isSegmented: async () => undefined,
    };
  }, () => rm(dir, { recursive: true, force: true }));
});

/** The X-Object-Meta-* headers of a Swift object, without the prefix. */
async function swiftMetadata(inner: SwiftBackend, key: string): Promise<Record<string, string> | undefined> {
  const h = await inner.head(key);
  if (!h) return undefined;
  const out: Record<string, string> = {};
  h.forEach((v, k) => {
    if (k.startsWith('x-object-meta-')) out[k.slice('x-object-meta-'.length)] = v;
  });
  return out;
}

describe('swift://', () => {
  const container = 'conformance';
  const prefix = `run-${run}`;
  backendConformance(async () => {
    const env = { ...server.swiftEnv(), COUCHTROVE_SWIFT_SEGMENT_SIZE: '1MiB' };
    const backend = await openStorage(`swift://${container}/${prefix}`, env);
    const inner = (backend as RetryingBackend).inner as SwiftBackend;
    return {
      name: 'swift',
      backend,
      segmentedSize: 7 * MiB + 123,
      rawNames: () => rawSwiftNames(server, container, `${prefix}/`),
      metadataOf: (key) => swiftMetadata(inner, key),
      isSegmented: async (key) => (await inner.head(key))?.get('x-static-large-object') === 'True',
      withPageSize: (n) => openSwiftBackend(new URL(`swift://${container}/${prefix}`), env, { listPageSize: n }),
    };
  });
});

describe('swift:// with streamed segments (spooled to files)', () => {
  // Segments larger than the in-memory limit take the other upload path: each segment is sent while it is read
  // and spooled to a temporary file for retries.
  const container = 'conformance-streamed';
  const prefix = `run-${run}`;
  backendConformance(async () => {
    const url = new URL(`swift://${container}/${prefix}`);
    const options = { segmentSize: MiB, memorySpoolLimit: 256 * 1024 };
    const inner = await openSwiftBackend(url, server.swiftEnv(), options);
    return {
      name: 'swift-streamed',
      backend: withRetries(inner),
      segmentedSize: 7 * MiB + 123,
      rawNames: () => rawSwiftNames(server, container, `${prefix}/`),
      metadataOf: (key) => swiftMetadata(inner, key),
      isSegmented: async (key) => (await inner.head(key))?.get('x-static-large-object') === 'True',
    };
  });
});

describe('s3:// (Swift s3api)', () => {
  const bucket = `conformance-s3-${run}`;
  const prefix = 'repo';
  backendConformance(async () => {
    const env = { ...server.s3Env(), COUCHTROVE_S3_PART_SIZE: '5MiB' };
    const backend = await openStorage(`s3://${bucket}/${prefix}`, env);
    const inner = (backend as RetryingBackend).inner as S3Backend;
    return {
      name: 's3',
      backend,
      segmentedSize: 12 * MiB + 5,
      rawNames: async () => {
        // Objects, multipart segments (s3api keeps them in BUCKET+segments) and unfinished uploads.
        const names = [
          ...(await rawSwiftNames(server, bucket, `${prefix}/`)),
          ...(await rawSwiftNames(server, `${bucket}+segments`, `${prefix}/`)).map((n) => `+segments/${n}`),
        ];
        const mpu = await inner.client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${prefix}/` }));
        for (const u of mpu.Uploads ?? []) names.push(`upload:${u.Key}`);
        return names;
      },
      metadataOf: (key) => inner.metadata(key),
      isSegmented: async (key) => {
        const h = await inner.client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}` }));
        return /-\d+"?$/.test(h.ETag ?? '');
      },
      withPageSize: (n) => openS3Backend(new URL(`s3://${bucket}/${prefix}`), env, { listPageSize: n }),
    };
  });
});

describe('swift:// nested manifests', () => {
  it('past max_manifest_segments, manifests nest; reads, listing and delete are unchanged', async () => {
    const container = 'conformance-nested';
    const inner = await openSwiftBackend(new URL(`swift://${container}/n`), server.swiftEnv(), { segmentSize: MiB, maxManifestSegments: 3 });
    const data = randomBytes(7 * MiB + 1); // 8 segments: 3 sub-manifests under the top manifest
    await inner.put('obj', streamOf(data), { metadata: { 'Backup-Id': 'nested' } });
    assert.equal(sha256(await readAll(await inner.get('obj'))), sha256(data));
    assert.deepEqual(await readAll(await inner.get('obj', { offset: 3 * MiB - 5, length: 10 })), data.subarray(3 * MiB - 5, 3 * MiB + 5));
    assert.equal((await inner.head('obj'))?.get('x-object-meta-backup-id'), 'nested');
    const raw = await rawSwiftNames(server, container, 'n/');
    assert.equal(raw.filter((n) => /\/m0-\d+$/.test(n)).length, 3, 'three sub-manifests');
    const listed: string[] = [];
    for await (const o of inner.list('')) listed.push(o.key);
    assert.deepEqual(listed, ['obj']);
    await inner.delete('obj');
    assert.deepEqual(await rawSwiftNames(server, container, 'n/'), []);
    await inner.close();
  });
});
