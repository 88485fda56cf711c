// The only things the agent does that give files to the instance's uid: they need CAP_CHOWN and CAP_FOWNER,
// which nothing else the agent does needs. As a local process (root on the host) the agent does them itself
// (directPrivileged). In a container (issue 22: "no capability it does not need for its next step") the agent
// runs without those two capabilities in its bounding set; its parent, `couchtrove agent entry`, keeps them and
// does exactly these operations on request over a socket (privilege separation, as OpenSSH's monitor): only
// for paths inside the instance's volume, only to the image's instance user, never through a link. The parent
// has no network and reads nothing else; a confused or taken-over agent can ask for nothing more than giving
// the instance what is in its own volume.
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { replaceFile, type Owner } from './files.js';
import { chownTree } from '../util/fs.js';
import { CouchtroveError, describeError } from '../util/errors.js';

export interface Privileged {
  /** Gives dir to owner, mode 0700, and with recursive everything under it (never through a link; files with more than one name are left). */
  give(dir: string, owner: Owner, recursive: boolean): Promise<void>;
  /** Writes file as a new inode owned by owner with this mode (the Erlang cookie); its directory is the agent's. */
  giveFile(file: string, content: string, mode: number, owner: Owner): Promise<void>;
}

/** In-process: the agent has the capabilities (a local process as root, or not isolated at all). */
export const directPrivileged: Privileged = {
  async give(dir, owner, recursive) {
    if (recursive) await chownTree(dir, owner.uid, owner.gid);
    else await fsp.lchown(dir, owner.uid, owner.gid);
    await fsp.chmod(dir, 0o700);
  },
  giveFile: (file, content, mode, owner) => replaceFile(file, content, mode, owner),
};

type Operation = { op: 'give'; dir: string; owner: Owner; recursive: boolean } | { op: 'giveFile'; file: string; content: string; mode: number; owner: Owner };
type Request = Operation & { id: number };
interface Reply {
  id: number;
  error?: string;
}

/** The agent's side: each operation is a request to the parent over the socket on fd. */
export function privilegedClient(fd: number): Privileged {
  return privilegedOver(new net.Socket({ fd, readable: true, writable: true }));
}

/** The same over any connected socket. */
export function privilegedOver(socket: net.Socket): Privileged {
  // The agent lives until it is told to stop; the socket must not keep it alive past that.
  socket.unref();
  const waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  let next = 1;
  let closed: Error | null = null;
  createInterface({ input: socket }).on('line', (line) => {
    const r = JSON.parse(line) as Reply;
    const w = waiting.get(r.id);
    waiting.delete(r.id);
    if (r.error === undefined) w?.resolve();
    else w?.reject(new CouchtroveError(r.error));
  });
  const fail = (err: Error): void => {
    closed = new CouchtroveError(`the agent's privileged parent is gone: ${err.message}`);
    for (const w of waiting.values()) w.reject(closed);
    waiting.clear();
  };
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('socket closed')));
  const call = (req: Operation): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (closed) return reject(closed);
      const id = next++;
      waiting.set(id, { resolve, reject });
      socket.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  return {
    give: (dir, owner, recursive) => call({ op: 'give', dir, owner, recursive }),
    giveFile: (file, content, mode, owner) => call({ op: 'giveFile', file, content, mode, owner }),
  };
}

export interface PrivilegedPolicy {
  /** The only owner anything may be given to (the image's instance user). */
  owner: Owner;
  /** The instance's volume: every path must be strictly inside it. */
  within: string;
}

/**
 * Checks that p is an absolute, normal path strictly inside policy.within and that no part of it below
 * within is a link (each checked with lstat; the parts above the last are the agent's or the instance's
 * directories, and giving never follows the last one either).
 */
async function checkInside(p: string, policy: PrivilegedPolicy): Promise<void> {
  if (typeof p !== 'string' || !path.isAbsolute(p) || path.normalize(p) !== p || !p.startsWith(`${policy.within}/`)) {
    throw new CouchtroveError(`refused: ${JSON.stringify(p)} is not a path inside ${policy.within}`);
  }
  let at = policy.within;
  for (const part of p.slice(policy.within.length + 1).split('/')) {
    at = path.join(at, part);
    const st = await fsp.lstat(at).catch(() => null);
    if (st?.isSymbolicLink()) throw new CouchtroveError(`refused: ${at} is a link`);
  }
}

/** One request, checked against the policy. The reply never carries more than the error's message. */
async function perform(req: Request, policy: PrivilegedPolicy): Promise<void> {
  const o = req.owner;
  if (!o || o.uid !== policy.owner.uid || o.gid !== policy.owner.gid) throw new CouchtroveError(`refused: files are given only to ${policy.owner.uid}:${policy.owner.gid}`);
  if (req.op === 'give') {
    await checkInside(req.dir, policy);
    const st = await fsp.lstat(req.dir);
    if (!st.isDirectory()) throw new CouchtroveError(`refused: ${req.dir} is not a directory`);
    return directPrivileged.give(req.dir, policy.owner, req.recursive === true);
  }
  if (req.op === 'giveFile') {
    await checkInside(req.file, policy);
    // The new file's directory must be the agent's (root's), so that nobody else can add names to it.
    const dir = await fsp.lstat(path.dirname(req.file));
    if (!dir.isDirectory() || dir.uid !== (process.getuid?.() ?? 0)) throw new CouchtroveError(`refused: ${path.dirname(req.file)} is not the agent's directory`);
    if (typeof req.content !== 'string' || !Number.isInteger(req.mode) || (req.mode & ~0o600) !== 0) throw new CouchtroveError('refused: a file is given with mode 0600 or narrower');
    return directPrivileged.giveFile(req.file, req.content, req.mode, policy.owner);
  }
  throw new CouchtroveError(`refused: unknown operation ${JSON.stringify((req as { op?: unknown }).op)}`);
}

/** The parent's side: answers the agent's requests on this stream until it closes, one at a time. */
export async function servePrivileged(stream: NodeJS.ReadableStream & NodeJS.WritableStream, policy: PrivilegedPolicy, log: (line: string) => void): Promise<void> {
  for await (const line of createInterface({ input: stream })) {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch {
      log('privileged: a request that is not JSON, ignored');
      continue;
    }
    const reply: Reply = { id: Number(req.id) };
    try {
      await perform(req, policy);
    } catch (err) {
      reply.error = describeError(err);
      log(`privileged: ${req.op} ${reply.error}`);
    }
    stream.write(`${JSON.stringify(reply)}\n`);
  }
}
