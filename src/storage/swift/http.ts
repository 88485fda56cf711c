// A minimal HTTP client on node:http/https for the Swift driver. Not fetch: Node 20's fetch lets a streamed
// request body run ahead of the socket (garbage grew with the object: ~330 MiB for a 350 MB PUT) and its web
// streams cost CPU on large downloads; node:http streams both ways with backpressure in constant memory.
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

export class Answer {
  constructor(readonly status: number, readonly headers: Headers, readonly body: http.IncomingMessage | null) {}

  /** Drops the rest of a small body (the connection goes back to the pool). */
  async cancel(): Promise<void> {
    if (!this.body || this.body.readableEnded || this.body.destroyed) return;
    this.body.resume();
    await finished(this.body).catch(() => undefined);
  }

  /** Abandons a large body (the connection is closed). */
  destroy(): void {
    this.body?.destroy();
  }

  async text(): Promise<string> {
    if (!this.body) return '';
    const chunks: Buffer[] = [];
    for await (const c of this.body as AsyncIterable<Buffer>) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
  }

  async json<T>(): Promise<T> {
    return JSON.parse(await this.text()) as T;
  }
}

export interface Agents {
  http: http.Agent;
  https: https.Agent;
}

export function newAgents(): Agents {
  return { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
}

/** Idle time after which a request is abandoned (no byte either way). */
const IDLE_TIMEOUT_MS = 300_000;

export function request(agents: Agents, url: string, method: string, headers: Record<string, string>, body?: Buffer | Readable | string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const secure = u.protocol === 'https:';
    const req = (secure ? https : http).request(u, { method, headers, agent: secure ? agents.https : agents.http }, (res) => {
      const status = res.statusCode ?? 0;
      const h = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        if (Array.isArray(v)) for (const x of v) h.append(k, x);
        else if (v !== undefined) h.set(k, v);
      }
      if (method === 'HEAD' || status === 204 || status === 304) {
        res.resume();
        resolve(new Answer(status, h, null));
      } else {
        resolve(new Answer(status, h, res));
      }
    });
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no progress for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    if (body instanceof Readable) {
      body.on('error', (err) => req.destroy(err));
      // A body abandoned before its end (the answer came early) must not leave the request hanging.
      body.on('close', () => {
        if (!body.readableEnded) req.destroy();
      });
      body.pipe(req);
    } else {
      req.end(body);
    }
  });
}
