// Trove v1.0 calls couchtrove does not implement, and instance options the compute driver cannot honour.
// An unimplemented call answers 501 notImplemented naming it, so a client (or its user) can tell "not
// here" from "instance not found"; a path Trove does not have stays 404. The paths and methods are
// those python-troveclient 8 sends (troveclient/v1/*.py); docs/control-plane.md lists them.
import type { FastifyInstance, FastifyRequest, HTTPMethods } from 'fastify';
import type { ControlPlane } from '../tasks/control.js';
import { badRequest, notImplemented } from '../tasks/errors.js';
import * as v from './validate.js';

type Req = FastifyRequest<{ Params: Record<string, string> }>;

export interface UnsupportedCall {
  method: HTTPMethods;
  /** Trove's path under /v1.0/{project_id}, with {placeholders}; {id} is an instance. */
  path: string;
  call: string;
}

export const UNSUPPORTED: readonly UnsupportedCall[] = [
  { method: 'GET', path: '/instances/{id}/modules', call: 'Instance module list/query' },
  { method: 'POST', path: '/instances/{id}/modules', call: 'Instance module apply' },
  { method: 'DELETE', path: '/instances/{id}/modules/{module}', call: 'Instance module remove' },
  { method: 'GET', path: '/instances/{id}/metadata', call: 'Instance metadata list' },
  { method: 'GET', path: '/instances/{id}/metadata/{key}', call: 'Instance metadata show' },
  { method: 'POST', path: '/instances/{id}/metadata/{key}', call: 'Instance metadata create' },
  { method: 'PUT', path: '/instances/{id}/metadata/{key}', call: 'Instance metadata update' },
  { method: 'PATCH', path: '/instances/{id}/metadata/{key}', call: 'Instance metadata edit' },
  { method: 'DELETE', path: '/instances/{id}/metadata/{key}', call: 'Instance metadata delete' },
  { method: 'GET', path: '/modules', call: 'Module list' },
  { method: 'POST', path: '/modules', call: 'Module create' },
  { method: 'GET', path: '/modules/{module}', call: 'Module show' },
  { method: 'PUT', path: '/modules/{module}', call: 'Module update' },
  { method: 'DELETE', path: '/modules/{module}', call: 'Module delete' },
  { method: 'GET', path: '/modules/{module}/instances', call: 'Module instances' },
  { method: 'PUT', path: '/modules/{module}/instances', call: 'Module reapply' },
  { method: 'GET', path: '/mgmt/quotas/{user_project}', call: 'Quota show' },
  { method: 'PUT', path: '/mgmt/quotas/{user_project}', call: 'Quota update' },
  // The path of quotas in older Trove releases.
  { method: 'GET', path: '/quotas/{user_project}', call: 'Quota show' },
  { method: 'PUT', path: '/quotas/{user_project}', call: 'Quota update' },
  { method: 'GET', path: '/limits', call: 'Limit list' },
  { method: 'GET', path: '/backup_strategies', call: 'Backup strategy list' },
  { method: 'POST', path: '/backup_strategies', call: 'Backup strategy create' },
  { method: 'DELETE', path: '/backup_strategies', call: 'Backup strategy delete' },
  { method: 'GET', path: '/volume-types', call: 'Volume type list' },
  { method: 'GET', path: '/volume-types/{type}', call: 'Volume type show' },
  { method: 'GET', path: '/datastores/{ds}/versions/{version}/volume-types', call: 'Datastore version volume type list' },
];

/** The 501 for one call: Trove's notImplemented body, naming the call and its route. */
export function notImplementedCall(call: string, method: string, path: string): Error {
  return notImplemented(`${call} (${method} ${path}) is not implemented by couchtrove.`);
}

export function registerUnsupportedRoutes(api: FastifyInstance, plane: ControlPlane): void {
  for (const u of UNSUPPORTED) {
    api.route({
      method: u.method,
      url: u.path.replace(/\{(\w+)\}/g, ':$1'),
      handler: async (req: Req) => {
        // An instance that does not exist (or is another project's) is still a 404: clients look names up on 404.
        if (u.path.startsWith('/instances/{id}')) await plane.instance(req.params.project!, req.params.id!);
        throw notImplementedCall(u.call, u.method, u.path);
      },
    });
  }
  // The management API (operator calls: hosts, accounts, mgmt instances, flavors, datastore versions).
  api.all('/mgmt/*', async (req: Req) => {
    throw notImplementedCall('Trove management API', req.method, `/mgmt/${(req.params['*'] ?? '').slice(0, 120)}`);
  });
}

/**
 * Instance options the compute driver cannot honour are refused, never ignored: the local driver binds every
 * instance to loopback on the host it runs on, with no networks, zones, public access or modules. A value that
 * asks for what an instance already is (is_public false, an empty list) is accepted: `openstack database
 * instance create` always sends "access": {"is_public": false}.
 */
export function refuseUnhonouredOptions(b: v.Obj, driver: string, what: 'create' | 'update'): void {
  const refuse = (option: string, why: string): never => {
    throw badRequest(`${option} is not supported by the ${driver} compute driver: ${why}.`);
  };
  const access = v.optional(b.access, (x) => v.obj(x, '"access"'));
  const checkPublic = (x: unknown, where: string): void => {
    if (x === undefined || x === null || x === false) return;
    if (x !== true) throw badRequest(`${where} must be true or false.`);
    refuse(`${where} true`, 'instances listen on the loopback address only');
  };
  const checkCidrs = (x: unknown, where: string): void => {
    const list = v.optional(x, (y) => v.arr(y, where));
    if (list !== null && list.length > 0) refuse(where, 'instances listen on the loopback address only, with no access list');
  };
  checkPublic(b.is_public, '"is_public"');
  checkCidrs(b.allowed_cidrs, '"allowed_cidrs"');
  if (access) {
    checkPublic(access.is_public, '"access"."is_public"');
    checkCidrs(access.allowed_cidrs, '"access"."allowed_cidrs"');
  }
  if (what === 'update') return;
  const nics = v.optional(b.nics, (x) => v.arr(x, '"nics"'));
  if (nics !== null && nics.length > 0) refuse('"nics"', 'it attaches no networks; instances listen on the loopback address');
  if (b.availability_zone !== undefined && b.availability_zone !== null) refuse('"availability_zone"', 'it has no availability zones; instances run on this host');
  const modules = v.optional(b.modules, (x) => v.arr(x, '"modules"'));
  if (modules !== null && modules.length > 0) refuse('"modules"', 'couchtrove does not implement Trove modules');
}
