// Configuration groups (Trove's /configurations): CouchDB settings from the published catalogue
// (src/config/couchdb-parameters.ts), checked and typed at create and edit, names unique per project.
// Attaching applies a group through the instance's agent; editing an attached group rolls the change
// out to its instances as Trove does: live keys at once, the others leave the instance
// RESTART_REQUIRED naming them. Every change to an instance is an `instance.configure` task.
import { randomUUID } from 'node:crypto';
import type { AgentApi } from '../agent/protocol.js';
import { couchdbParameter, iniValue, notSettableReason, typeParameterValue, type ParameterValue } from '../config/couchdb-parameters.js';
import { flavorOverrides } from '../config/server.js';
import { now, type Row } from '../state/index.js';
import type { InstanceStatus } from '../state/schema.js';
import type { ControlPlane } from './control.js';
import { agentCall, DATASTORE } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { badRequest, conflict, notFound, ServiceError, unprocessable } from './errors.js';

/** 'section/key' -> typed value (numbers stay numbers, booleans booleans). */
export type ConfigValues = Record<string, ParameterValue>;

interface ConfigureParams {
  /** The group attached once the task is done; null: detach. */
  configurationId: string | null;
  /** An edit rolled out: only these keys change (null: back to the base value). Absent: the whole group. */
  overrides?: Record<string, string | null>;
}

/** Checks a request's "values" against the catalogue; 400 naming the first key or value refused. */
export function checkValues(v: unknown, version: string): ConfigValues {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('"values" must be a JSON object of "section/key": value.');
  const out: ConfigValues = {};
  for (const [k, raw] of Object.entries(v as Record<string, unknown>)) {
    const p = couchdbParameter(k);
    if (!p) {
      throw badRequest(`Configuration parameter ${JSON.stringify(k.slice(0, 120))} is not supported for ${DATASTORE} ${version}: ${notSettableReason(k)}. ` +
        `GET /v1.0/{project_id}/datastores/${DATASTORE}/versions/${version}/parameters lists the parameters that are.`);
    }
    const r = typeParameterValue(p, raw);
    if ('problem' in r) throw badRequest(`The value of configuration parameter ${k} ${r.problem}.`);
    out[k] = r.value;
  }
  return out;
}

function rawValues(c: Row<'configurations'>): Record<string, unknown> {
  return JSON.parse(c.values) as Record<string, unknown>;
}

/**
 * A group's values as stored, typed. Groups written before the catalogue may hold strings or keys it
 * does not allow: those are shown as they are, and never sent to an agent (see unsettableKeys).
 */
export function storedValues(c: Row<'configurations'>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rawValues(c))) {
    const p = couchdbParameter(k);
    const r = p ? typeParameterValue(p, v) : undefined;
    out[k] = r && 'value' in r ? r.value : v;
  }
  return out;
}

/** The values the catalogue allows, typed. */
function settableValues(c: Row<'configurations'>): ConfigValues {
  const out: ConfigValues = {};
  for (const [k, v] of Object.entries(rawValues(c))) {
    const p = couchdbParameter(k);
    const r = p ? typeParameterValue(p, v) : undefined;
    if (r && 'value' in r) out[k] = r.value;
  }
  return out;
}

/** Keys of a stored group that the catalogue refuses (a group written before it). */
export function unsettableKeys(c: Row<'configurations'>): string[] {
  const ok = settableValues(c);
  return Object.keys(rawValues(c)).filter((k) => !(k in ok));
}

/** A group as the agent takes it: ini text of its settable values. */
export function groupOverrides(c: Row<'configurations'>): Record<string, string> {
  return Object.fromEntries(Object.entries(settableValues(c)).map(([k, v]) => [k, iniValue(v)]));
}

/** 422 for a group holding keys the catalogue refuses: it cannot be applied to an instance. */
export function refuseUnsettable(c: Row<'configurations'>): void {
  const bad = unsettableKeys(c);
  if (bad.length > 0) {
    throw unprocessable(`Configuration ${c.id} holds ${bad.map((k) => JSON.stringify(k.slice(0, 80))).join(', ')}, which cannot be set (not in the catalogue of CouchDB parameters, or an invalid value): edit the group first.`);
  }
}

// ---- names -------------------------------------------------------------------------------------

const nameTaken = (name: string): ServiceError =>
  conflict(`A configuration group named ${JSON.stringify(name)} already exists in this project: names are unique per project.`);

async function othersNamed(plane: ControlPlane, projectId: string, name: string, self: string): Promise<boolean> {
  return (await plane.store.find('configurations', { project_id: projectId, name })).some((c) => c.id !== self);
}

// ---- requests ----------------------------------------------------------------------------------

export async function createConfiguration(plane: ControlPlane, projectId: string, req: { name: string; description: string | null; values: unknown; version: string | null }): Promise<Row<'configurations'>> {
  const v = await plane.datastoreVersion(req.version);
  const values = checkValues(req.values, v.name);
  if (await othersNamed(plane, projectId, req.name, '')) throw nameTaken(req.name);
  await plane.ensureProject(projectId);
  const t = now();
  const row: Row<'configurations'> = {
    id: randomUUID(), project_id: projectId, name: req.name, description: req.description, values: JSON.stringify(values),
    datastore: DATASTORE, datastore_version: v.name, created: t, updated: t,
  };
  await plane.store.insert('configurations', row);
  // Two creates with one name may both pass the check (two processes on one PostgreSQL): each that
  // then sees another removes its own, so at worst both give way, and never do two stay.
  if (await othersNamed(plane, projectId, req.name, row.id)) {
    await plane.store.remove('configurations', row.id);
    throw nameTaken(req.name);
  }
  return row;
}

/**
 * PUT (replace: the values become exactly those given) or PATCH (merge) of a group. When the group is
 * attached, every attached instance is claimed for an instance.configure task first (422, and nothing
 * changes, when one is busy or not running), then the group is saved and the tasks roll it out.
 */
export async function updateConfiguration(plane: ControlPlane, projectId: string, id: string, req: { values: unknown; replace: boolean; name?: string; description?: string | null }): Promise<void> {
  const c = await plane.configuration(projectId, id);
  const before = settableValues(c);
  const given = checkValues(req.values, c.datastore_version);
  const after = req.replace ? given : { ...before, ...given };
  const rename = req.name !== undefined && req.name !== c.name;
  if (rename && (await othersNamed(plane, projectId, req.name!, c.id))) throw nameTaken(req.name!);

  const claimed: Row<'tasks'>[] = [];
  const giveBack = async (): Promise<void> => {
    for (const t of claimed) {
      await plane.store.update('instances', t.instance_id!, { task_id: null, updated: now() }, { task_id: t.id });
      await plane.tasks.discard(t.id);
    }
  };
  const patch: Partial<Row<'configurations'>> = { values: JSON.stringify(after), updated: now() };
  if (rename) patch.name = req.name!;
  if (req.description !== undefined) patch.description = req.description;
  try {
    for (const inst of await plane.store.find('instances', { configuration_id: c.id, project_id: projectId })) {
      const overrides = changes(before, after, flavorOverrides(await plane.flavor(inst.flavor_id)));
      if (Object.keys(overrides).length === 0) continue;
      const params: ConfigureParams = { configurationId: c.id, overrides };
      try {
        const status = inst.status === 'RESTART_REQUIRED' ? 'RESTART_REQUIRED' : 'ACTIVE';
        claimed.push(await plane.claim(projectId, inst.id, 'instance.configure', status, ['ACTIVE', 'RESTART_REQUIRED'], params, plane.config.taskTimeout));
      } catch (err) {
        if (err instanceof ServiceError) throw unprocessable(`Configuration ${c.id} was not changed: it is attached to instance ${inst.id}, which cannot take the change now. ${err.message}`);
        throw err;
      }
    }
    if (!(await plane.store.update('configurations', c.id, patch, { project_id: projectId }))) throw notFound(`Configuration group ${id} could not be found.`);
    if (rename && (await othersNamed(plane, projectId, req.name!, c.id))) {
      await plane.store.update('configurations', c.id, { values: c.values, name: c.name, description: c.description, updated: c.updated });
      throw nameTaken(req.name!);
    }
  } catch (err) {
    await giveBack();
    throw err;
  }
  for (const t of claimed) plane.tasks.start(t);
}

/** What an instance must change for a group going from before to after; removed keys go back to the flavor's value or CouchDB's default. */
function changes(before: ConfigValues, after: ConfigValues, flavor: Record<string, string>): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const [k, v] of Object.entries(after)) if (before[k] !== v) out[k] = iniValue(v);
  for (const k of Object.keys(before)) if (!(k in after)) out[k] = flavor[k] ?? null;
  return out;
}

export async function deleteConfiguration(plane: ControlPlane, projectId: string, ref: string): Promise<void> {
  const { id } = await plane.configuration(projectId, ref);
  const attached: Row<'instances'>[] = [];
  for (const inst of await plane.store.find('instances', { configuration_id: id })) {
    // An instance whose detach is under way no longer counts: detach, then delete, works as in Trove.
    const task = inst.task_id ? await plane.store.get('tasks', inst.task_id) : undefined;
    const detaching = task?.kind === 'instance.configure' && (task.status === 'NEW' || task.status === 'RUNNING') && (JSON.parse(task.params) as { configurationId?: unknown }).configurationId === null;
    if (!detaching) attached.push(inst);
  }
  if (attached.length > 0) throw unprocessable(`Configuration ${id} is attached to instance(s) ${attached.map((i) => i.id).join(', ')}: detach it first.`);
  await plane.store.remove('configurations', id);
}

/** Attach (configurationId) or detach (null) an instance's group. */
export async function setConfiguration(plane: ControlPlane, projectId: string, id: string, configurationId: string | null): Promise<void> {
  const inst = await plane.instance(projectId, id);
  if (configurationId !== null) {
    const c = await plane.configuration(projectId, configurationId);
    if (inst.configuration_id !== null) throw unprocessable(`Instance ${id} already has configuration ${inst.configuration_id} attached: detach it first.`);
    if (c.datastore_version !== inst.datastore_version) throw unprocessable(`Configuration ${c.id} is for ${c.datastore} ${c.datastore_version}, the instance runs ${inst.datastore_version}.`);
    refuseUnsettable(c);
  } else if (inst.configuration_id === null) {
    throw unprocessable(`Instance ${id} has no configuration attached.`);
  }
  const params: ConfigureParams = { configurationId };
  // Detaching is the way back from a group that keeps CouchDB from starting: it is allowed in ERROR and
  // SHUTDOWN too (the task prepares the instance again on the flavor's settings and starts it).
  const allowed: InstanceStatus[] = configurationId === null ? ['ACTIVE', 'RESTART_REQUIRED', 'ERROR', 'SHUTDOWN'] : ['ACTIVE', 'RESTART_REQUIRED'];
  const during: InstanceStatus = inst.status === 'RESTART_REQUIRED' || (configurationId === null && (inst.status === 'ERROR' || inst.status === 'SHUTDOWN')) ? inst.status : 'ACTIVE';
  const task = await plane.claim(projectId, id, 'instance.configure', during, allowed, params, plane.config.taskTimeout);
  plane.tasks.start(task);
}

// ---- the task ----------------------------------------------------------------------------------

/** Why the instance waits for a restart, as its agent says (it names the keys). */
async function restartReason(agent: AgentApi, pending: string[]): Promise<string | null> {
  const s = await withTimeout(agent.status(), 5000).catch(() => null);
  if (s?.state === 'RESTART_REQUIRED' && s.reason) return s.reason;
  return pending.length > 0 ? `configuration waiting for a restart: ${pending.join(', ')}` : null;
}

export function registerConfigurationTasks(plane: ControlPlane): void {
  plane.tasks.register<ConfigureParams>('instance.configure', {
    resumable: true,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      const agent = await plane.compute.agent(inst);
      let restartRequired = false;
      let pending: string[] = [];
      if (ctx.params.configurationId) {
        const conf = await plane.store.get('configurations', ctx.params.configurationId);
        if (!conf) throw new Error(`configuration ${ctx.params.configurationId} was deleted`);
        const overrides = ctx.params.overrides ?? groupOverrides(conf);
        if (Object.keys(overrides).length > 0) {
          const r = await agentCall(agent.applyConfiguration(overrides));
          restartRequired = r.restartRequired;
          pending = r.pending;
        }
      } else {
        // Detach: the instance's ini files go back to the flavor's settings. prepare restarts CouchDB on them,
        // so every key (this group's and any pending one) is in effect and no restart is left to ask for.
        await agentCall(agent.prepare(await plane.settings(inst, { configurationId: null })));
      }
      const restart = restartRequired || (ctx.params.configurationId !== null && inst.status === 'RESTART_REQUIRED');
      const fault = restart && ctx.params.configurationId ? (await restartReason(agent, pending)) ?? inst.fault : null;
      const ok = await plane.store.update('instances', inst.id, {
        configuration_id: ctx.params.configurationId, status: restart ? 'RESTART_REQUIRED' : 'ACTIVE', task_id: null, fault, updated: now(),
      }, { task_id: ctx.task.id });
      if (!ok) throw new Error(`instance ${inst.id} is no longer held by task ${ctx.task.id}`);
    },
    failed: async (task, reason) => {
      if (task.instance_id) await plane.release(task.instance_id, task.id, reason);
    },
  });
}
