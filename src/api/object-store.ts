// A read-only Swift view of published guest logs (docs/control-plane.md, "Identity"): the one container
// Trove publishes logs to, database_logs, under the account AUTH_<project> of ./identity.ts's catalog.
// The real clients' `log tail` and `log save` list the container with the log's prefix, HEAD each object
// for its X-Object-Meta-Lines and GET it; the objects are the copies `publish` put in the repository,
// whatever storage that is (file, Swift, S3), streamed through.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ControlPlane } from '../tasks/control.js';
import { LOG_CONTAINER, listPublished, readPublishedObject, type PublishedObject } from '../tasks/logs.js';
import { swiftAccount } from './identity.js';

type Req = FastifyRequest<{ Params: { account: string; container: string; '*': string }; Querystring: Record<string, string | undefined> }>;

/** Swift's last_modified form: ISO 8601 in UTC without the zone, microseconds. */
const swiftTime = (iso: string): string => `${iso.replace(/Z$/, '').replace(/\.\d+$/, '')}.000000`;

export function registerObjectStoreRoutes(app: FastifyInstance, plane: ControlPlane, projectOf: (token: string | undefined) => string | undefined): void {
  /** The project whose account this is, or a reply already sent (Swift answers plain text). */
  const project = (req: Req, reply: FastifyReply): string | undefined => {
    const raw = req.headers['x-auth-token'];
    const owner = projectOf(Array.isArray(raw) ? raw[0] : raw);
    if (!owner) {
      void reply.code(401).type('text/plain').send('Unauthorized: send X-Auth-Token, a token of the account\'s project.\n');
      return undefined;
    }
    if (req.params.account !== swiftAccount(owner)) {
      void reply.code(403).type('text/plain').send(`Forbidden: the token is for account ${swiftAccount(owner)}.\n`);
      return undefined;
    }
    if (req.params.container !== LOG_CONTAINER) {
      void reply.code(404).type('text/plain').send(`Not Found: the only container is ${LOG_CONTAINER} (published guest logs).\n`);
      return undefined;
    }
    return owner;
  };
  const objectHeaders = (reply: FastifyReply, o: PublishedObject): FastifyReply =>
    reply
      .header('content-type', 'text/plain; charset=utf-8')
      .header('content-length', String(o.size))
      .header('last-modified', new Date(`${o.published}Z`).toUTCString())
      .header('x-object-meta-lines', String(o.lines))
      .header('x-object-meta-published', o.published);

  app.get('/swift/v1/:account/:container', async (req: Req, reply) => {
    const owner = project(req, reply);
    if (!owner) return reply;
    // A parameter given twice arrives as an array (`?prefix=a&prefix=b`): refused, naming it, rather than a 500.
    const repeated = Object.entries(req.query as Record<string, unknown>).find(([, v]) => Array.isArray(v));
    if (repeated) return reply.code(400).type('text/plain').send(`Bad Request: the query parameter ${JSON.stringify(repeated[0])} is given more than once.\n`);
    const objects = await listPublished(plane, owner, req.query.prefix ?? '');
    const after = objects.filter((o) => req.query.marker === undefined || o.key > req.query.marker);
    reply.header('x-container-object-count', String(objects.length)).header('x-container-bytes-used', String(objects.reduce((n, o) => n + o.size, 0)));
    if (req.query.format !== 'json') return reply.type('text/plain').send(after.map((o) => `${o.key}\n`).join(''));
    return after.map((o) => ({ name: o.key, bytes: o.size, last_modified: swiftTime(o.published), content_type: 'text/plain', hash: '' }));
  });
  const object = (withBody: boolean) => async (req: Req, reply: FastifyReply) => {
    const owner = project(req, reply);
    if (!owner) return reply;
    const found = await readPublishedObject(plane, owner, req.params['*'], withBody);
    if (!found) return reply.code(404).type('text/plain').send('Not Found: no published log of this account has that name.\n');
    objectHeaders(reply, found.object);
    return withBody ? reply.send(found.body) : reply.send();
  };
  // HEAD before GET, so Fastify does not add its own HEAD (which would read the whole object).
  app.head('/swift/v1/:account/:container/*', object(false));
  app.get('/swift/v1/:account/:container/*', object(true));
}
