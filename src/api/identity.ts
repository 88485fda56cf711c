// Keystone v3's password flow, as far as the OpenStack clients need it to find couchtrove's endpoints
// (docs/control-plane.md, "Identity"): GET /v3 (version discovery) and POST /v3/auth/tokens. The password
// is a project token of couchtrove (any password in local auth mode, which listens on loopback only), the
// issued token is that token, and the catalog names the Trove API and the Swift view of published guest
// logs (./object-store.ts), which `openstack database log tail|save` and `trove log-tail|log-save` read.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ControlPlane } from '../tasks/control.js';
import { LOCAL_TOKEN, faultBody } from './server.js';
import * as v from './validate.js';

export interface IdentityOptions {
  /** The API's base URL as clients reach it. */
  base: (req: FastifyRequest) => string;
  /** The project a token belongs to, if any. */
  projectOf: (token: string | undefined) => string | undefined;
}

/** The object-store endpoint of a project: Swift's AUTH_<project> account. */
export const swiftAccount = (project: string): string => `AUTH_${project}`;

const TOKEN_HOURS = 12;

export function registerIdentityRoutes(app: FastifyInstance, plane: ControlPlane, o: IdentityOptions): void {
  const version = (req: FastifyRequest): Record<string, unknown> => ({
    version: {
      id: 'v3.14',
      status: 'stable',
      updated: '2020-04-07T00:00:00Z',
      links: [{ rel: 'self', href: `${o.base(req)}/v3/` }],
      'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
    },
  });
  app.get('/v3', async (req) => version(req));

  app.post('/v3/auth/tokens', async (req: FastifyRequest, reply: FastifyReply) => {
    const refuse = (why: string): FastifyReply => reply.code(401).send({ error: { code: 401, title: 'Unauthorized', message: why } });
    const auth = v.isObj(req.body) && v.isObj(req.body.auth) ? req.body.auth : undefined;
    const identity = auth && v.isObj(auth.identity) ? auth.identity : undefined;
    const methods = identity && Array.isArray(identity.methods) ? identity.methods : [];
    if (!identity || !methods.includes('password') || !v.isObj(identity.password) || !v.isObj(identity.password.user)) {
      return refuse('Only the password method is served: {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name", "password"}}}}}.');
    }
    const user = identity.password.user;
    const password = typeof user.password === 'string' ? user.password : undefined;
    let project = o.projectOf(password);
    let token = password;
    if (!project && plane.config.authMode === 'local') {
      project = plane.config.localProject;
      token = LOCAL_TOKEN;
    }
    if (!project || !token) return refuse('The password is not a couchtrove project token.');
    // A scope naming another project is refused, never silently changed (by name or id: both are the id here).
    // Every name given must be this project, as a string: {"id": "alpha", "name": "beta"} or {"id": ["beta"]}
    // is refused rather than read one field of.
    if (auth && auth.scope !== undefined && auth.scope !== 'unscoped') {
      if (!v.isObj(auth.scope) || !v.isObj(auth.scope.project)) return refuse('Only a project scope is served: {"scope": {"project": {"id" or "name"}}}.');
      const scoped = auth.scope.project;
      for (const field of ['id', 'name'] as const) {
        const asked = scoped[field];
        if (asked === undefined) continue;
        if (typeof asked !== 'string') return refuse(`The scope's project ${field} must be a string.`);
        if (asked !== project) return refuse(`The token is for project ${project}, not ${asked.slice(0, 80)}.`);
      }
    }
    const base = o.base(req);
    const endpoints = (url: string, service: string): Record<string, unknown>[] =>
      ['public', 'internal', 'admin'].map((i) => ({ id: `${service}-${i}`, interface: i, region: plane.config.region, region_id: plane.config.region, url }));
    const userName = typeof user.name === 'string' && user.name !== '' ? user.name.slice(0, 255) : 'couchtrove';
    const domain = { id: 'default', name: 'Default' };
    const issued = new Date();
    return reply
      .code(201)
      .header('X-Subject-Token', token)
      .send({
        token: {
          methods: ['password'],
          user: { id: userName, name: userName, domain },
          project: { id: project, name: project, domain },
          roles: [{ id: 'member', name: 'member' }],
          issued_at: issued.toISOString(),
          expires_at: new Date(issued.getTime() + TOKEN_HOURS * 3600_000).toISOString(),
          catalog: [
            { id: 'trove', type: 'database', name: 'trove', endpoints: endpoints(`${base}/v1.0/${project}`, 'trove') },
            { id: 'swift', type: 'object-store', name: 'swift', endpoints: endpoints(`${base}/swift/v1/${swiftAccount(project)}`, 'swift') },
          ],
        },
      });
  });
  // Keystone's other calls (users, projects, catalogs) are not served: a plain 404 that says so.
  app.all('/v3/*', async (_req, reply) => reply.code(404).send(faultBody(404, 'Only GET /v3 and POST /v3/auth/tokens are served here.')));
}
