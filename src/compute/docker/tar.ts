// Tar streams for the Docker Engine API (build contexts, putArchive), made with tar-stream: trees of
// files from several places under chosen names, and small in-memory files with their owner and mode.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';

export interface TreeEntry {
  /** A file or directory on this host. */
  src: string;
  /** Its name in the archive. */
  dest: string;
  /** Paths (relative to src) to leave out, with everything under them. */
  skip?: (rel: string) => boolean;
}

export interface MemoryFile {
  name: string;
  content: string | Buffer;
  mode: number;
  uid: number;
  gid: number;
}

function add(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
    if (body) pack.entry(header, body, cb);
    else pack.entry(header, cb);
  });
}

async function addFile(pack: tar.Pack, src: string, header: Partial<tar.Header> & { name: string }): Promise<void> {
  let done!: () => void;
  let failed!: (e: Error) => void;
  const written = new Promise<void>((resolve, reject) => ((done = resolve), (failed = reject)));
  const entry = pack.entry(header, (err) => (err ? failed(err) : done()));
  await pipeline(fs.createReadStream(src), entry);
  await written;
}

async function addTree(pack: tar.Pack, e: TreeEntry, rel: string): Promise<void> {
  if (rel !== '' && e.skip?.(rel)) return;
  const src = path.join(e.src, rel);
  const name = rel === '' ? e.dest : path.posix.join(e.dest, rel.split(path.sep).join('/'));
  const st = fs.lstatSync(src);
  const base = { name, mode: st.mode & 0o7777, mtime: st.mtime, uid: 0, gid: 0 };
  if (st.isSymbolicLink()) return add(pack, { ...base, type: 'symlink', linkname: fs.readlinkSync(src) });
  if (st.isDirectory()) {
    await add(pack, { ...base, type: 'directory' });
    for (const child of fs.readdirSync(src).sort()) await addTree(pack, e, path.join(rel, child));
    return;
  }
  if (st.isFile()) return addFile(pack, src, { ...base, type: 'file', size: st.size });
  // sockets, fifos, devices: nothing an image needs
}

/** A tar stream of the given trees (read from disk as the stream is consumed), ending with the memory files. */
export function packTrees(trees: TreeEntry[], files: MemoryFile[] = []): Readable {
  const pack = tar.pack();
  void (async () => {
    try {
      for (const t of trees) await addTree(pack, t, '');
      for (const f of files) await add(pack, { name: f.name, type: 'file', mode: f.mode, uid: f.uid, gid: f.gid, mtime: new Date() }, Buffer.from(f.content));
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  // tar-stream's pack is a streamx stream; dockerode wants a Node stream.
  return Readable.from(pack);
}

/** Small files (and the directories they need, owned by root, 0755 unless given) as a tar stream. */
export function packFiles(files: MemoryFile[], dirs: Array<{ name: string; mode: number; uid: number; gid: number }> = []): Readable {
  const pack = tar.pack();
  void (async () => {
    try {
      for (const d of dirs) await add(pack, { name: d.name, type: 'directory', mode: d.mode, uid: d.uid, gid: d.gid, mtime: new Date() });
      for (const f of files) await add(pack, { name: f.name, type: 'file', mode: f.mode, uid: f.uid, gid: f.gid, mtime: new Date() }, Buffer.from(f.content));
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  // tar-stream's pack is a streamx stream; dockerode wants a Node stream.
  return Readable.from(pack);
}
