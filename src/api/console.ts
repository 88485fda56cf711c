// The web console's static files (console/, built into dist/console by `npm run build`), served at
// /console/ on the API's own origin. A small handler rather than @fastify/static: the bundle is a handful
// of files read once into memory, so no request path ever reaches the file system (nothing to traverse),
// and every answer carries the console's security headers (docs/console.md).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { faultBody } from './server.js';

/** dist/console, next to dist/src where this file is compiled to. */
export const CONSOLE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../console');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json; charset=utf-8',
};

/**
 * Scripts and styles only from the console's own files (none inline), API calls only to this origin,
 * no framing, no forms posted anywhere, no plugins.
 */
export const CONSOLE_CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "font-src 'self'", "manifest-src 'self'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

interface Asset {
  type: string;
  body: Buffer;
}

function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  if (!fs.existsSync(dir)) return assets;
  for (const name of fs.readdirSync(dir)) {
    const type = TYPES[path.extname(name)];
    const file = path.join(dir, name);
    if (type && fs.statSync(file).isFile()) assets.set(name, { type, body: fs.readFileSync(file) });
  }
  return assets;
}

export function registerConsoleRoutes(app: FastifyInstance, dir = CONSOLE_DIR): void {
  const assets = loadAssets(dir);
  const send = (reply: FastifyReply, name: string): FastifyReply => {
    reply
      .header('content-security-policy', CONSOLE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
      .header('cross-origin-opener-policy', 'same-origin')
      .header('permissions-policy', 'camera=(), microphone=(), geolocation=()')
      // Small files: revalidate each time, so a new build is never mixed with an old one.
      .header('cache-control', 'no-cache');
    const a = assets.get(name);
    if (!a) {
      const why = assets.size === 0 ? 'The console is not built: run `npm run build`.' : `No such console file: ${name.slice(0, 80)}.`;
      return reply.code(404).send(faultBody(404, why));
    }
    return reply.code(200).type(a.type).send(a.body);
  };
  // /console and /console/ are one route (ignoreTrailingSlash): index.html names its files absolutely.
  app.get('/console/', (_req, reply) => send(reply, 'index.html'));
  app.get('/console/:file', (req, reply) => send(reply, (req.params as { file: string }).file));
}
