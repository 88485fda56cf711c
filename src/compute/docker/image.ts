// `couchtrove image build`: the guest image from image/Dockerfile. The Dockerfile takes CouchDB and
// Node.js from images (COUCHDB_IMAGE, NODE_IMAGE: the official ones in production); where no registry
// is reachable, a local CouchDB release directory and this host's node binary are first wrapped in
// FROM-scratch images, so the one Dockerfile serves both. Without a release directory the image carries
// the development engine (labelled org.couchtrove.engine=devengine).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type Docker from 'dockerode';
import { packageRoot } from '../local.js';
import { followProgress } from './connect.js';
import { packTrees, type MemoryFile } from './tar.js';

export const DEFAULT_GUEST_IMAGE = 'couchtrove-guest:latest';

export interface ImageBuildOptions {
  tag: string;
  /** Base image (Debian 12): debian:bookworm-slim in production. */
  base: string;
  /** An Apache CouchDB 3.x release directory to put in the image (wins over couchdbImage). */
  couchdbHome?: string;
  /** An image holding the release at /opt/couchdb (apache/couchdb:3.5). Neither: the development engine. */
  couchdbImage?: string;
  /** An image holding node at /usr/local/bin/node; absent: this process's node binary. */
  nodeImage?: string;
  log?: (line: string) => void;
}

export interface ImageBuildResult {
  tag: string;
  id: string;
  engine: 'couchdb' | 'devengine';
  seconds: number;
}

// node_modules the agent never loads: compilers, linters, type declarations.
const DEV_ONLY = /^node_modules\/(typescript|eslint[^/]*|@eslint[^/]*|@typescript-eslint|typescript-eslint|@types|fast-check|\.cache)(\/|$)/;

/** Builds a FROM-scratch image holding one local directory or file at dest; tagged by its path and mtime. */
async function wrapLocal(docker: Docker, src: string, dest: string, repo: string, log: (l: string) => void): Promise<string> {
  const st = fs.statSync(src);
  const tag = `${repo}:${createHash('sha256').update(`${path.resolve(src)}|${st.mtimeMs}|${st.size}`).digest('hex').slice(0, 12)}`;
  const dockerfile: MemoryFile = { name: 'Dockerfile', content: `FROM scratch\nCOPY src /${dest}\n`, mode: 0o644, uid: 0, gid: 0 };
  const stream = await docker.buildImage(packTrees([{ src, dest: 'src' }], [dockerfile]), { t: tag, rm: true, forcerm: true });
  await followProgress(docker, stream, (l) => log(`  ${l}`));
  return tag;
}

export async function buildGuestImage(docker: Docker, o: ImageBuildOptions): Promise<ImageBuildResult> {
  const log = o.log ?? (() => undefined);
  const t0 = Date.now();
  const root = packageRoot();
  if (!fs.existsSync(path.join(root, 'dist', 'src', 'cli', 'main.js'))) throw new Error(`${root}/dist is missing: run npm run build first`);
  let couchdbImage = o.couchdbImage;
  let engine: ImageBuildResult['engine'] = 'couchdb';
  if (o.couchdbHome) {
    if (!fs.existsSync(path.join(o.couchdbHome, 'bin', 'couchdb'))) throw new Error(`${o.couchdbHome} is not a CouchDB release directory (no bin/couchdb)`);
    log(`wrapping the CouchDB release ${o.couchdbHome}`);
    couchdbImage = await wrapLocal(docker, o.couchdbHome, 'opt/couchdb', 'couchtrove-src-couchdb', log);
  } else if (!couchdbImage) {
    // The development engine lives in the package (devengine/); /opt/couchdb only says so.
    engine = 'devengine';
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-image-devengine-'));
    try {
      fs.writeFileSync(path.join(empty, 'README'), 'No Apache CouchDB in this image: instances run the couchtrove development engine.\n');
      fs.utimesSync(empty, new Date(0), new Date(0));
      couchdbImage = await wrapLocal(docker, empty, 'opt/couchdb', 'couchtrove-src-devengine', log);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  }
  let nodeImage = o.nodeImage;
  if (!nodeImage) {
    log(`wrapping this host's node binary ${process.execPath} (${process.version})`);
    nodeImage = await wrapLocal(docker, process.execPath, 'usr/local/bin/node', 'couchtrove-src-node', log);
  }
  log(`building ${o.tag} from ${o.base} (CouchDB from ${couchdbImage}, Node.js from ${nodeImage})`);
  const context = packTrees([
    { src: path.join(root, 'image', 'Dockerfile'), dest: 'Dockerfile' },
    { src: path.join(root, 'package.json'), dest: 'app/package.json' },
    { src: path.join(root, 'bin'), dest: 'app/bin' },
    { src: path.join(root, 'dist'), dest: 'app/dist', skip: (rel) => rel.startsWith('test') || rel.startsWith('bench') },
    { src: path.join(root, 'devengine'), dest: 'app/devengine', skip: (rel) => rel === 'src' },
    { src: path.join(root, 'node_modules'), dest: 'app/node_modules', skip: (rel) => DEV_ONLY.test(`node_modules/${rel.split(path.sep).join('/')}`) },
  ]);
  const stream = await docker.buildImage(context, {
    t: o.tag, rm: true, forcerm: true,
    buildargs: { BASE: o.base, COUCHDB_IMAGE: couchdbImage, NODE_IMAGE: nodeImage, ENGINE: engine },
    // The RUN step may fetch Debian packages: the host's network, whatever the daemon's bridge.
    networkmode: 'host',
  });
  await followProgress(docker, stream, (l) => log(`  ${l}`));
  const info = await docker.getImage(o.tag).inspect();
  return { tag: o.tag, id: info.Id, engine, seconds: (Date.now() - t0) / 1000 };
}
