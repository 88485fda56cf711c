// S3 repository: s3://BUCKET/PREFIX, with the AWS SDK v3 (@aws-sdk/client-s3, @aws-sdk/lib-storage).
//
// Environment: AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for anything but AWS itself, AWS_REGION (or
// AWS_DEFAULT_REGION; default us-east-1), AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or
// the SDK's default chain (profiles, SSO, instance and container roles) when no key is given.
// COUCHTROVE_S3_FORCE_PATH_STYLE=true|false chooses path-style addressing; it defaults to true when
// AWS_ENDPOINT_URL is set (most S3-compatible servers, Swift's s3api among them, need it), false otherwise.
//
// Works against Swift's s3api too (docs/storage.md): checksums only when an operation requires them
// (a streamed PutObject sent aws-chunked gets 501 from Swift), Content-MD5 added to DeleteObjects,
// parts sized so that objects up to a few hundred GiB stay within s3api's 1,000 parts.
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  S3ServiceException,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { checkKey, ObjectNotFoundError, StorageError, type Backend, type ObjectInfo, type PutOptions, type Range } from '../backend.js';
import { checkMetadata, parseSize, splitRepositoryUrl, storageError } from '../util.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
export const S3_MIN_PART = 5 * MiB;
export const S3_MAX_PART = 5 * GiB;
export const S3_MAX_OBJECT = 5 * 1024 * GiB;
/** Without a size hint: 1,000 parts of 64 MiB cover 62.5 GiB on s3api, 10,000 cover 625 GiB on AWS. */
export const S3_DEFAULT_PART = 64 * MiB;
/** Parts up to this size are used to stay within 1,000 parts (objects up to 500 GiB). */
const ONE_THOUSAND_PARTS_CAP = 512 * MiB;

export interface S3Options {
  /** Fixed part size in bytes (default COUCHTROVE_S3_PART_SIZE, else chosen from PutOptions.sizeHint). */
  partSize?: number;
  /** Parts uploaded at the same time; memory use is about (queueSize + 1) x part size (default 2). */
  queueSize?: number;
  /** Keys asked for per listing request (default 1,000, the S3 maximum). */
  listPageSize?: number;
  /** Tries per request, the first included (default AWS_MAX_ATTEMPTS, else 5). */
  maxAttempts?: number;
}

/**
 * Part size for an object of about sizeHint bytes: the smallest whole MiB that keeps it within 1,000 parts
 * (Swift's s3api limit, and 1,000 is plenty for AWS) while that is at most 512 MiB, i.e. objects up to 500 GiB;
 * beyond, within AWS's 10,000 parts (5 TiB / 10,000 = 525 MiB parts). Never under 5 MiB.
 */
export function choosePartSize(sizeHint: number | undefined, fallback = S3_DEFAULT_PART): number {
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint <= 0) return Math.max(S3_MIN_PART, fallback);
  const roundMiB = (n: number): number => Math.ceil(n / MiB) * MiB;
  const for1000 = roundMiB(sizeHint / 1000);
  if (for1000 <= ONE_THOUSAND_PARTS_CAP) return Math.max(S3_MIN_PART, for1000);
  return Math.min(S3_MAX_PART, Math.max(ONE_THOUSAND_PARTS_CAP, roundMiB(sizeHint / 10000)));
}

function truthy(v: string | undefined): boolean | undefined {
  if (v === undefined || v === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new StorageError(`COUCHTROVE_S3_FORCE_PATH_STYLE must be true or false, got ${JSON.stringify(v)}`);
}

export async function openS3Backend(url: URL, env: NodeJS.ProcessEnv = process.env, options: S3Options = {}): Promise<S3Backend> {
  const { container: bucket, prefix } = splitRepositoryUrl(url, 's3');
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const forcePathStyle = truthy(env.COUCHTROVE_S3_FORCE_PATH_STYLE) ?? endpoint !== undefined;
  const maxAttempts = options.maxAttempts ?? (env.AWS_MAX_ATTEMPTS ? Number(env.AWS_MAX_ATTEMPTS) : 5);
  const config: S3ClientConfig = {
    region,
    forcePathStyle,
    maxAttempts,
    // Swift's s3api (and several other servers) reject aws-chunked uploads with trailing checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(endpoint ? { endpoint } : {}),
  };
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    // From the env passed in (not process.env), so that callers and tests can give their own.
    config.credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    };
  } else if (env.AWS_ACCESS_KEY_ID || env.AWS_SECRET_ACCESS_KEY) {
    throw new StorageError('S3 credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, for the SDK default chain)');
  }
  // The SDK warns on every process start under Node 20 that future SDK releases will need Node 22: noise on
  // the CLI's stderr for a version this project supports and pins. Left alone when set either way.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new S3Client(config);
  addContentMd5(client);
  const partSize = options.partSize ?? (env.COUCHTROVE_S3_PART_SIZE ? parseSize(env.COUCHTROVE_S3_PART_SIZE, 'COUCHTROVE_S3_PART_SIZE') : undefined);
  if (partSize !== undefined && (partSize < S3_MIN_PART || partSize > S3_MAX_PART)) {
    throw new StorageError('S3 part size must be between 5 MiB and 5 GiB');
  }
  return new S3Backend(client, bucket, prefix, { ...options, ...(partSize !== undefined ? { partSize } : {}) }, endpoint);
}

/**
 * DeleteObjects requires Content-MD5 on S3 implementations that predate flexible checksums (Swift's s3api);
 * current SDKs send only x-amz-checksum-*. Added at the build step, before signing.
 */
function addContentMd5(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown } | undefined;
      if (context.commandName === 'DeleteObjectsCommand' && request?.headers) {
        const body = request.body;
        if (typeof body === 'string' || body instanceof Uint8Array) {
          request.headers['content-md5'] = createHash('md5').update(body).digest('base64');
        }
      }
      return next(args);
    },
    { step: 'build', name: 'couchtroveContentMd5', override: true },
  );
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string })?.name;
  return name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchBucket' || httpStatus(err) === 404;
}

export class S3Backend implements Backend {
  readonly location: string;
  private bucketReady: Promise<void> | undefined;

  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    /** '' or ends with '/'. */
    readonly prefix: string,
    private readonly options: S3Options,
    private readonly endpoint: string | undefined,
  ) {
    this.location = `s3://${bucket}/${prefix}`;
  }

  private fail(what: string, err: unknown): StorageError {
    const status = httpStatus(err);
    const code = err instanceof S3ServiceException ? err.name : (err as { code?: string; name?: string })?.code ?? (err as Error)?.name;
    const message = (err as Error)?.message ?? String(err);
    const where = this.endpoint ? ` at ${this.endpoint}` : '';
    let hint = '';
    if (status === 403 || code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch') hint = ' (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)';
    if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed') hint = ' (check AWS_REGION)';
    return storageError(`${what} in ${this.location}${where} failed: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${message}${hint}`, { cause: err });
  }

  private name(key: string): string {
    return this.prefix + checkKey(key);
  }

  private ensureBucket(): Promise<void> {
    if (!this.bucketReady) {
      const p = (async () => {
        try {
          await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
          return;
        } catch (err) {
          if (!isNotFound(err)) throw this.fail(`checking bucket ${this.bucket}`, err);
        }
        try {
          const region = await this.client.config.region();
          await this.client.send(new CreateBucketCommand({
            Bucket: this.bucket,
            ...(region && region !== 'us-east-1' && !this.endpoint ? { CreateBucketConfiguration: { LocationConstraint: region as never } } : {}),
          }));
        } catch (err) {
          const name = (err as Error).name;
          if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw this.fail(`creating bucket ${this.bucket}`, err);
        }
      })();
      this.bucketReady = p;
      p.catch(() => {
        if (this.bucketReady === p) this.bucketReady = undefined;
      });
    }
    return this.bucketReady;
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<ObjectInfo> {
    const name = this.name(key);
    const metadata = Object.fromEntries(checkMetadata(options.metadata, this.location));
    if (options.sizeHint !== undefined && options.sizeHint > S3_MAX_OBJECT) {
      throw new StorageError(`${key}: ${options.sizeHint} bytes is more than S3's 5 TiB object limit`);
    }
    const partSize = this.options.partSize ?? choosePartSize(options.sizeHint);
    await this.ensureBucket().catch((err: unknown) => {
      body.destroy();
      throw err;
    });
    if (this.endpoint) await this.dropMultipartBeforeOverwrite(key, name);
    let size = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        done(null, chunk);
      },
    });
    // A failing source destroys `counted` with its error, which fails the upload.
    pipeline(body, counted).catch(() => undefined);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: name, Body: counted, ContentType: 'application/octet-stream', Metadata: metadata },
      partSize,
      queueSize: this.options.queueSize ?? 2,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      counted.destroy();
      body.destroy();
      throw this.fail(`writing ${key} (parts of ${partSize} bytes)`, err);
    }
    return { key, size, modified: new Date() };
  }

  /**
   * Swift's s3api keeps a multipart object's parts in BUCKET+segments and does not remove them when the object
   * is overwritten (only when it is deleted). With a custom endpoint, an existing multipart object is therefore
   * deleted before it is replaced. The Backend contract allows it: a failed put leaves no object or the old one.
   */
  private async dropMultipartBeforeOverwrite(key: string, name: string): Promise<void> {
    let etag: string | undefined;
    try {
      etag = (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: name }))).ETag;
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.fail(`stat ${key}`, err);
    }
    if (etag && /-\d+"?$/.test(etag)) await this.delete(key);
  }

  async get(key: string, range?: Range): Promise<Readable> {
    const offset = range?.offset ?? 0;
    if (range?.length === 0) {
      if (!(await this.stat(key))) throw new ObjectNotFoundError(this.location, key);
      return Readable.from([]);
    }
    const rangeHeader = offset > 0 || range?.length !== undefined ? `bytes=${offset}-${range?.length !== undefined ? offset + range.length - 1 : ''}` : undefined;
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.name(key), ...(rangeHeader ? { Range: rangeHeader } : {}) }));
      if (!out.Body) return Readable.from([]);
      return out.Body as Readable;
    } catch (err) {
      if (isNotFound(err)) throw new ObjectNotFoundError(this.location, key);
      if (httpStatus(err) === 416 || (err as Error).name === 'InvalidRange') return Readable.from([]);
      throw this.fail(`reading ${key}`, err);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.name(key) }));
      return { key, size: out.ContentLength ?? 0, ...(out.LastModified ? { modified: out.LastModified } : {}) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.fail(`stat ${key}`, err);
    }
  }

  /** User metadata of an object (x-amz-meta-*, names lower-cased): for tests and tools. */
  async metadata(key: string): Promise<Record<string, string> | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.name(key) }));
      return out.Metadata ?? {};
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.fail(`stat ${key}`, err);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.prefix + prefix,
          MaxKeys: this.options.listPageSize ?? 1000,
          ...(token ? { ContinuationToken: token } : {}),
        }));
      } catch (err) {
        if ((err as Error).name === 'NoSuchBucket') return;
        throw this.fail(`listing ${prefix || '(all)'}`, err);
      }
      for (const o of out.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, ...(o.LastModified ? { modified: o.LastModified } : {}) };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.name(key) }));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.fail(`deleting ${key}`, err);
    }
  }

  /** Deletes many objects, 1,000 a request (DeleteObjects); missing ones are not an error. */
  async deleteMany(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      let out;
      try {
        out = await this.client.send(new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: batch.map((k) => ({ Key: this.name(k) })), Quiet: true },
        }));
      } catch (err) {
        throw this.fail(`deleting ${batch.length} objects`, err);
      }
      const errors = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (errors.length) {
        const first = errors[0]!;
        throw storageError(`deleting ${errors.length} objects in ${this.location} failed, e.g. ${first.Key?.slice(this.prefix.length)}: ${first.Code} ${first.Message ?? ''}`);
      }
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
