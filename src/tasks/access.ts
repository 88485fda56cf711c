// Databases, users and root of an instance (Trove's /databases, /users and /root): synchronous requests
// that the instance's agent carries out at once; no task runs and nothing is written to the state store.
// CouchDB's own system databases and the root admin are left out of what a user sees, as Trove does.
import type { AccessRole, AgentApi, NewUser } from '../agent/protocol.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane, UserSpec } from './control.js';
import { agentCall } from './control.js';
import { badRequest, notFound, unprocessable } from './errors.js';

const SYSTEM_DBS = new Set(['_users', '_replicator', '_global_changes']);
const HIDDEN_USERS = new Set(['root']);

/** The agent of an instance that can serve database/user/root requests. */
async function readyAgent(plane: ControlPlane, projectId: string, id: string): Promise<AgentApi> {
  const inst = await plane.instance(projectId, id);
  if (!['ACTIVE', 'RESTART_REQUIRED', 'BACKUP'].includes(inst.status)) {
    throw unprocessable(`Instance ${id} is not ready: status ${inst.status} (databases, users and root need ACTIVE).`);
  }
  try {
    return await plane.compute.agent(inst);
  } catch (err) {
    throw unprocessable(`Instance ${id}: its agent cannot be reached: ${describeError(err)}`);
  }
}

export async function listDatabases(plane: ControlPlane, projectId: string, id: string): Promise<string[]> {
  const a = await readyAgent(plane, projectId, id);
  return (await agentCall(a.listDatabases())).filter((d) => !SYSTEM_DBS.has(d)).sort();
}

export async function createDatabases(plane: ControlPlane, projectId: string, id: string, names: string[]): Promise<void> {
  const a = await readyAgent(plane, projectId, id);
  const existing = new Set(await agentCall(a.listDatabases()));
  for (const n of names) if (existing.has(n)) throw badRequest(`Database ${n} already exists on instance ${id}.`);
  for (const n of names) await agentCall(a.createDatabase(n));
}

export async function deleteDatabase(plane: ControlPlane, projectId: string, id: string, name: string): Promise<void> {
  const a = await readyAgent(plane, projectId, id);
  if (!(await agentCall(a.listDatabases())).includes(name) || SYSTEM_DBS.has(name)) throw notFound(`Database ${name} could not be found on instance ${id}.`);
  await agentCall(a.deleteDatabase(name));
}

/** A user as the API shows it: its databases, and the role it has on each (admin may write design documents). */
export interface UserAccess {
  name: string;
  databases: string[];
  roles: Record<string, AccessRole>;
}

export async function listUsers(plane: ControlPlane, projectId: string, id: string): Promise<UserAccess[]> {
  const a = await readyAgent(plane, projectId, id);
  return (await agentCall(a.listUsers()))
    .filter((u) => !HIDDEN_USERS.has(u.name))
    .map((u) => {
      const databases = u.databases.filter((d) => !SYSTEM_DBS.has(d));
      return { name: u.name, databases, roles: Object.fromEntries(databases.map((d) => [d, (u.adminOf ?? []).includes(d) ? 'admin' : 'member'] as const)) };
    })
    .sort((x, y) => x.name.localeCompare(y.name));
}

export async function getUser(plane: ControlPlane, projectId: string, id: string, name: string): Promise<UserAccess> {
  const users = await listUsers(plane, projectId, id);
  const u = users.find((x) => x.name === name);
  if (!u) throw notFound(`User ${name} could not be found on instance ${id}.`);
  return u;
}

export async function createUsers(plane: ControlPlane, projectId: string, id: string, users: UserSpec[]): Promise<void> {
  const a = await readyAgent(plane, projectId, id);
  const existing = new Set((await agentCall(a.listUsers())).map((u) => u.name));
  const dbs = new Set(await agentCall(a.listDatabases()));
  for (const u of users) {
    if (existing.has(u.name) || HIDDEN_USERS.has(u.name)) throw badRequest(`User ${u.name} already exists on instance ${id}.`);
    for (const d of u.databases) if (!dbs.has(d)) throw notFound(`Database ${d} could not be found on instance ${id}.`);
  }
  for (const u of users) await createWithRoles(a, u);
}

/** Creates a user as member of its databases, then makes it admin of those in adminOf. */
export async function createWithRoles(a: AgentApi, u: UserSpec): Promise<void> {
  const nu: NewUser = { name: u.name, password: u.password, databases: u.databases };
  await agentCall(a.createUser(nu));
  if (u.adminOf?.length) await agentCall(a.grantAccess(u.name, u.adminOf, 'admin'));
}

export async function deleteUser(plane: ControlPlane, projectId: string, id: string, name: string): Promise<void> {
  await getUser(plane, projectId, id, name);
  const a = await readyAgent(plane, projectId, id);
  await agentCall(a.deleteUser(name));
}

export async function changePasswords(plane: ControlPlane, projectId: string, id: string, users: Array<{ name: string; password: string }>): Promise<void> {
  for (const u of users) await getUser(plane, projectId, id, u.name);
  const a = await readyAgent(plane, projectId, id);
  for (const u of users) await agentCall(a.changePassword(u.name, u.password));
}

/** Grants access with a role (member by default, as Trove's call has none); granting again changes the role. */
export async function grantAccess(plane: ControlPlane, projectId: string, id: string, name: string, databases: string[], role: AccessRole = 'member'): Promise<void> {
  await getUser(plane, projectId, id, name);
  const a = await readyAgent(plane, projectId, id);
  const dbs = new Set(await agentCall(a.listDatabases()));
  for (const d of databases) if (!dbs.has(d) || SYSTEM_DBS.has(d)) throw notFound(`Database ${d} could not be found on instance ${id}.`);
  await agentCall(role === 'member' ? a.grantAccess(name, databases) : a.grantAccess(name, databases, role));
}

export async function revokeAccess(plane: ControlPlane, projectId: string, id: string, name: string, database: string): Promise<void> {
  const u = await getUser(plane, projectId, id, name);
  if (!u.databases.includes(database)) throw notFound(`User ${name} has no access to database ${database} on instance ${id}.`);
  const a = await readyAgent(plane, projectId, id);
  await agentCall(a.revokeAccess(name, database));
}

export async function enableRoot(plane: ControlPlane, projectId: string, id: string, password?: string): Promise<{ name: 'root'; password: string }> {
  const a = await readyAgent(plane, projectId, id);
  return agentCall(a.enableRoot(password));
}

/** Whether root is enabled, and since when when the agent knows (it enabled root, and is of issue 23 or later). */
export async function rootEnabled(plane: ControlPlane, projectId: string, id: string): Promise<{ enabled: boolean; since: string | null }> {
  const a = await readyAgent(plane, projectId, id);
  return agentCall(a.rootStatus ? a.rootStatus() : a.isRootEnabled().then((enabled) => ({ enabled, since: null })));
}

export async function disableRoot(plane: ControlPlane, projectId: string, id: string): Promise<void> {
  const a = await readyAgent(plane, projectId, id);
  if (!(await agentCall(a.isRootEnabled()))) throw notFound(`Root is not enabled on instance ${id}.`);
  await agentCall(a.disableRoot());
}
