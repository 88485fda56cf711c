// A repository inside another: every key gets a fixed prefix. An archive stream is a whole repository
// under `archive/<stream>/` of the instance's repository, so the backup engine writes, reads and deletes
// its cuts unchanged, and `list`/`expire` of the repository itself never scan its thousands of cuts.
import type { Backend, ObjectHandle, ObjectInfo, ObjectWriter, PutOptions, Range } from './backend.js';
import type { Readable } from 'node:stream';
import { checkKey } from './backend.js';

export class PrefixedBackend implements Backend {
  readonly location: string;
  readonly create?: (key: string, options?: PutOptions) => Promise<ObjectWriter>;
  readonly open?: (key: string) => Promise<ObjectHandle>;

  constructor(
    readonly outer: Backend, // not `inner`: deleteObjects() would bypass the prefix through it
    readonly prefix: string,
  ) {
    if (!prefix.endsWith('/')) throw new Error(`prefix ${prefix} must end with /`);
    checkKey(prefix.slice(0, -1));
    this.location = `${outer.location.replace(/\/$/, '')}/${prefix.slice(0, -1)}`;
    // Only what the driver has: the engine chooses its fast paths by whether these exist.
    if (outer.create) this.create = (key, options) => outer.create!(this.#k(key), options);
    if (outer.open) this.open = (key) => outer.open!(this.#k(key));
  }

  #k(key: string): string {
    return this.prefix + key;
  }

  put(key: string, body: Readable, options?: PutOptions): Promise<ObjectInfo> {
    return this.outer.put(this.#k(key), body, options).then((i) => ({ ...i, key }));
  }
  get(key: string, range?: Range): Promise<Readable> {
    return this.outer.get(this.#k(key), range);
  }
  async stat(key: string): Promise<ObjectInfo | undefined> {
    const i = await this.outer.stat(this.#k(key));
    return i ? { ...i, key } : undefined;
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const o of this.outer.list(this.#k(prefix))) yield { ...o, key: o.key.slice(this.prefix.length) };
  }
  delete(key: string): Promise<void> {
    return this.outer.delete(this.#k(key));
  }
  /** The inner backend stays open: it belongs to the caller. */
  async close(): Promise<void> {}
}
