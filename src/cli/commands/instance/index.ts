// `couchtrove instance list|show|create|delete|restart|resize-volume|resize-flavor|upgrade|detach-replica|promote|eject|archive|cuts` against the API.
import { defineCommand, type AnyCommand } from '../../command.js';
import { TroveApiClient, details, label, moreHint, print, table, waitFor, type JsonObject } from '../../../api/client.js';
import { API, BACKUP_BY_NAME } from '../api.js';
import { formatBytes } from '../../../util/format.js';

const COLS = ['id', 'name', 'status', 'flavor', 'volume', 'datastore', 'couchdb_url'];

const show = (io: Parameters<AnyCommand['run']>[1], json: boolean | undefined, inst: JsonObject): void =>
  print(io, json, { instance: inst }, () => details(readable(inst)) + (inst.engine_warning ? `\nWARNING: ${String(inst.engine_warning)}\n` : ''));

const gb = (n: unknown): string => (typeof n === 'number' ? n.toFixed(2) : '?');

/** show in units people read (issue 15): GB with two decimals, names beside ids; --json keeps the API's bytes. */
export function readable(inst: JsonObject): JsonObject {
  const o: JsonObject = { ...inst };
  const flavor = inst.flavor as JsonObject | undefined;
  if (flavor) o.flavor = flavor.name ? `${String(flavor.name)} (${String(flavor.id)})` : String(flavor.id);
  const vol = inst.volume as JsonObject | undefined;
  if (vol) {
    const size = typeof vol.size_bytes === 'number' ? vol.size_bytes / 1024 ** 3 : vol.size;
    o.volume = vol.used === undefined ? `${gb(size)} GB` : `${gb(vol.used)} of ${gb(size)} GB used${typeof vol.used_bytes === 'number' && typeof vol.size_bytes === 'number' && vol.size_bytes > 0 ? ` (${Math.round((100 * vol.used_bytes) / vol.size_bytes)}%)` : ''}${vol.full ? ', FULL: client writes are refused' : ''}`;
  }
  const ds = inst.datastore as JsonObject | undefined;
  if (ds) o.datastore = `${String(ds.type)} ${String(ds.version)}${ds.version_number ? ` (CouchDB ${String(ds.version_number)})` : ''}`;
  const data = inst.data as JsonObject | undefined;
  if (data) o.data = `${String(data.documents)} documents in ${String(data.databases)} databases, ${gb(data.size)} GB on disk`;
  const b = inst.last_backup as JsonObject | undefined;
  if (b) o.last_backup = `${String(b.id)} ${String(b.name)}${b.incremental ? ' (incremental)' : ''}, completed ${String(b.completed)}, ${gb(b.size)} GB`;
  if (Array.isArray(inst.pending_restart)) o.pending_restart = `${inst.pending_restart.join(', ')} (restart the instance to apply)`;
  if (Array.isArray(inst.addresses)) o.addresses = (inst.addresses as JsonObject[]).map((a) => String(a.address)).join(', ');
  const fault = inst.fault as JsonObject | undefined;
  if (fault) o.fault = String(fault.message);
  const rf = inst.restored_from as JsonObject | undefined;
  if (rf) o.restored_from = restoredFromText(rf);
  for (const k of ['replica_of', 'configuration']) {
    const r = inst[k] as JsonObject | undefined;
    if (r) o[k] = r.name ? `${String(r.name)} (${String(r.id)})` : String(r.id);
  }
  return o;
}

/** One line for a restore's `restored_from`: which cut (or backup), its time, the base, what was asked. */
export function restoredFromText(rf: JsonObject): string {
  const deleted = rf.instance_deleted ? `, deleted ${String(rf.instance_deleted)}` : '';
  const who = rf.instance_id ? ` of ${rf.instance_name ? `${String(rf.instance_name)} (${String(rf.instance_id)}${deleted})` : `${String(rf.instance_id)}${deleted}`}` : '';
  const what = rf.from === 'archive' ? `archive cut ${String(rf.cut)}${who}` : `backup ${String(rf.base_backup)}${rf.backup_name ? ` (${String(rf.backup_name)})` : ''}${who}`;
  return `${what}, data as of ${String(rf.cut_time)}, base backup ${String(rf.base_backup)}; asked: ${String(rf.requested_time)}${rf.time_zone_note ? ` (${String(rf.time_zone_note)})` : ''}`;
}

/** A row of `instance list --deleted` in words. */
function deletedRow(d: JsonObject): JsonObject {
  const r = (d.restorable ?? {}) as JsonObject;
  const b = (d.backups ?? {}) as JsonObject;
  return { ...d, restorable: `${String(r.from ?? '?')} .. ${String(r.to ?? '?')}`, expires: r.expires ? `archive ${String(r.expires)}` : 'backups kept until deleted', backups: String(b.count ?? 0) };
}

export const instanceCommands: AnyCommand[] = [
  defineCommand({
    path: ['instance', 'list'], summary: 'List instances (--deleted: the deleted ones still restorable, with their window)', required: [], optional: [...API, 'pageLimit', 'pageMarker', 'listDeleted'],
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      if (o.listDeleted) {
        const { rows, next } = o.pageLimit ? await c.page('/instances?deleted=true', 'instances', o.pageLimit, o.pageMarker) : { rows: await c.list('/instances?deleted=true', 'instances', undefined, o.pageMarker), next: undefined };
        print(io, o.json, { instances: rows }, () => (rows.length ? table(rows.map(deletedRow), ['id', 'name', 'deleted', 'restorable', 'expires', 'backups']) : 'no deleted instance is restorable\n'));
        moreHint(io, next);
        return 0;
      }
      const { rows, next } = o.pageLimit ? await c.page('/instances', 'instances', o.pageLimit, o.pageMarker) : { rows: await c.list('/instances', 'instances', undefined, o.pageMarker), next: undefined };
      const full = await Promise.all(rows.map(async (r) => ((await c.get(`/instances/${r.id as string}`)).instance as JsonObject)));
      // The restorable window of instances with continuous archiving (from the oldest cut kept to the newest restore point).
      for (const i of full) {
        const w = (i.archive as JsonObject | undefined)?.window as JsonObject | undefined;
        if (w) i.restorable = `${String(w.from ?? '?')} .. ${String(w.to ?? '?')}`;
      }
      const shown = full.map((i) => ({ ...i, volume: typeof (i.volume as JsonObject | undefined)?.size === 'number' ? `${String((i.volume as JsonObject).size)} GB` : '' }));
      print(io, o.json, { instances: rows }, () => table(shown, full.some((i) => i.restorable) ? [...COLS, 'restorable'] : COLS));
      moreHint(io, next);
      return 0;
    },
  }),
  defineCommand({
    path: ['instance', 'show'], summary: 'Show an instance: status, where to connect (couchdb_url), volume use', required: ['instanceRef'], optional: [...API], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      show(io, o.json, (await c.get(`/instances/${id}`)).instance as JsonObject);
      return 0;
    },
  }),
  defineCommand({
    path: ['instance', 'create'], summary: 'Create an instance (optionally with databases, users, from a backup, or from an instance as of a time)',
    required: ['resourceName'], optional: [...API, 'flavorRef', 'volumeSize', 'datastoreVersion', 'databases', 'userSpecs', 'backupId', 'fromInstance', 'restoreTime', 'replicaOf', 'configurationRef', 'wait'], positional: 'resourceName',
    specialise: {
      resourceName: { description: 'Name of the new instance' },
      databases: { description: 'Comma-separated names of databases to create in the new instance' },
      backupId: { ...BACKUP_BY_NAME, description: 'Create the instance from this backup (name or id): its data, users and settings' },
    },
    run: async (o, io) => {
      // A replica takes its source's flavor (and volume size) unless given.
      if (o.flavorRef === undefined && !o.replicaOf) throw Object.assign(new Error('missing required option --flavor (only a replica, --replica-of, may leave it out)'), { name: 'UsageError' });
      const c = new TroveApiClient(o);
      const body: JsonObject = { name: o.resourceName, datastore: { type: 'couchdb', ...(o.datastoreVersion ? { version: o.datastoreVersion } : {}) } };
      if (o.flavorRef !== undefined) body.flavorRef = o.flavorRef;
      if (o.volumeSize !== undefined) body.volume = { size: o.volumeSize };
      if (o.databases) body.databases = (o.databases as string[]).map((name) => ({ name }));
      if (o.userSpecs) body.users = o.userSpecs.map((u) => ({ name: u.name, password: u.password, databases: u.databases.map((name) => ({ name })) }));
      if (o.fromInstance && o.backupId) throw Object.assign(new Error('give --from-instance or --backup, not both'), { name: 'UsageError' });
      if (o.restoreTime && !o.backupId && !o.fromInstance) throw Object.assign(new Error('--restore-time needs --from-instance NAME|ID (a live or deleted instance; instance list --deleted)'), { name: 'UsageError' });
      if (o.backupId) body.restorePoint = { backupRef: await c.resolve('backup', o.backupId), ...(o.restoreTime ? { restoreTime: o.restoreTime } : {}) };
      // The API resolves the name: a deleted instance is found there, not in the live list.
      if (o.fromInstance) body.restorePoint = { instanceRef: o.fromInstance, restoreTime: o.restoreTime ?? 'latest' };
      if (o.replicaOf) body.replica_of = await c.instanceId(o.replicaOf);
      if (o.configurationRef) body.configuration = await c.resolve('configuration', o.configurationRef);
      let inst = (await c.request('POST', '/instances', { instance: body })).instance as JsonObject;
      if (o.wait) inst = (await waitFor(c, io, 'instance', inst.id as string)) ?? inst;
      show(io, o.json, inst);
      return o.wait && failed(inst) ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['instance', 'delete'], summary: 'Delete an instance (its CouchDB, agent and volume)', required: ['instanceRef'], optional: [...API, 'wait'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const inst = await c.find('instance', o.instanceRef);
      const id = inst.id;
      const kept = ((await c.request('DELETE', `/instances/${id}`)).instance as JsonObject | undefined)?.kept as JsonObject | undefined;
      if (o.wait) await waitFor(c, io, 'instance', id, { gone: true });
      print(io, o.json, { id, name: inst.name, deleted: true, ...(kept ? { kept } : {}) }, () => `instance ${label(inst)} ${o.wait ? 'deleted' : 'is being deleted'}${kept?.message ? `: ${String(kept.message)}` : ''}\n`);
      return 0;
    },
  }),
  ...(['detach-replica', 'promote', 'eject'] as const).map((verb) =>
    defineCommand({
      path: ['instance', verb],
      summary: verb === 'detach-replica' ? 'Detach a replica: it stops following its source and becomes standalone and writable'
        : verb === 'promote' ? 'Promote a replica to replica source: the old source and the other replicas follow it'
          : 'Eject a replica source that is gone (dead, down, or not answering within 3 s): the replica with the most documents takes over, the others follow it',
      required: ['instanceRef'], optional: [...API, 'wait'], positional: 'instanceRef',
      run: async (o, io) => {
        const c = new TroveApiClient(o);
        const id = await c.instanceId(o.instanceRef);
        let note = '';
        if (verb === 'detach-replica') await c.request('PATCH', `/instances/${id}`, { instance: { replica_of: null } });
        else {
          const r = await c.request('POST', `/instances/${id}/action`, verb === 'promote' ? { promote_to_replica_source: {} } : { eject_replica_source: {} });
          const e = r.eject as JsonObject | undefined;
          if (e) note = `ejecting ${id}: ${String(e.source_state)}; last seen ${e.last_seen ? String(e.last_seen) : 'never by this server since it started'}\n`;
        }
        if (note) io.stderr.write(note);
        let inst = (await c.get(`/instances/${id}`)).instance as JsonObject;
        if (o.wait) {
          await new Promise((r) => setTimeout(r, 300));
          inst = (await waitFor(c, io, 'instance', id)) ?? inst;
        }
        show(io, o.json, inst);
        return o.wait && verb !== 'eject' && failed(inst) ? 1 : 0;
      },
    }),
  ),
  defineCommand({
    path: ['instance', 'upgrade'], summary: "Upgrade to another registered CouchDB version (--datastore-version V): a backup first, then CouchDB from V's release; the old release comes back if V's does not run",
    required: ['instanceRef', 'datastoreVersion'], optional: [...API, 'wait'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('PATCH', `/instances/${id}`, { instance: { datastore_version: o.datastoreVersion } });
      let inst = (await c.get(`/instances/${id}`)).instance as JsonObject;
      if (o.wait) {
        await new Promise((r) => setTimeout(r, 300));
        inst = (await waitFor(c, io, 'instance', id)) ?? inst;
      }
      show(io, o.json, inst);
      // A rollback leaves the instance ACTIVE on its old version with the reason in fault: that is a failure.
      return o.wait && (failed(inst) || (inst.datastore as JsonObject | undefined)?.version !== o.datastoreVersion) ? 1 : 0;
    },
  }),
  defineCommand({
    path: ['instance', 'archive'], summary: "Continuous archiving on (--on, a cut every --interval seconds) or off (--off); without either, the archive's state: restore point, window, lag",
    required: ['instanceRef'], optional: [...API, 'archiveOn', 'archiveOff', 'archiveInterval', 'archiveKeepDays'], positional: 'instanceRef',
    run: async (o, io) => {
      if (o.archiveOn && o.archiveOff) throw Object.assign(new Error('give one of --on and --off'), { name: 'UsageError' });
      if (!o.archiveOn && (o.archiveInterval !== undefined || o.archiveKeepDays !== undefined)) throw Object.assign(new Error('--interval and --keep-days go with --on'), { name: 'UsageError' });
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      if (!o.archiveOn && !o.archiveOff) {
        const inst = (await c.get(`/instances/${id}`)).instance as JsonObject;
        const r = (inst.archive as JsonObject | undefined) ?? { enabled: false };
        print(io, o.json, { archive: r }, () => details(r));
        return 0;
      }
      const action: JsonObject = { enabled: o.archiveOn === true };
      if (o.archiveInterval !== undefined) action.interval = o.archiveInterval;
      if (o.archiveKeepDays !== undefined) action.keep_days = o.archiveKeepDays;
      const r = (await c.request('POST', `/instances/${id}/action`, { archive: action })).archive as JsonObject;
      print(io, o.json, { archive: r }, () => details(r));
      return 0;
    },
  }),
  defineCommand({
    path: ['instance', 'cuts'], summary: "The cuts of an instance's archive (live or deleted), one page (--limit, default 100): base or incremental, when taken, its restore point, bytes stored",
    required: ['instanceRef'], optional: [...API, 'fromTime', 'toTime', 'newestFirst', 'pageLimit', 'pageMarker'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      // The API takes a live or deleted instance's id or name (a deleted one has no id lookup by name here).
      const q = new URLSearchParams({ sort: o.newestFirst ? 'desc' : 'asc' });
      if (o.fromTime) q.set('from', o.fromTime);
      if (o.toTime) q.set('to', o.toTime);
      const { rows, next } = await c.page(`/instances/${encodeURIComponent(o.instanceRef)}/archive/cuts?${q.toString()}`, 'cuts', o.pageLimit, o.pageMarker);
      const shown = rows.map((r) => ({ ...r, kind: r.base ? 'base' : `incremental (base ${String(r.base_cut)})`, stored: typeof r.size_bytes === 'number' ? formatBytes(r.size_bytes) : String(r.error ?? '') }));
      print(io, o.json, { cuts: rows }, () => (rows.length ? table(shown, ['id', 'kind', 'started', 'restore_point', 'stored']) : 'no cut in that range\n'));
      moreHint(io, next);
      return 0;
    },
  }),
  // One definition per verb, so that each accepts only its own options (restart takes no --size).
  actionCommand('restart', 'Restart CouchDB', [], () => ({ restart: {} })),
  actionCommand('resize-volume', 'Grow the volume (--size GB; never shrinks)', ['volumeSize'], (o) => ({ resize: { volume: { size: o.volumeSize } } })),
  actionCommand('resize-flavor', 'Change the flavor (CouchDB restarts with its settings)', ['flavorRef'], (o) => ({ resize: { flavorRef: o.flavorRef } })),
];

/** An instance action (POST /instances/{id}/action), positional NAME|ID, with the verb's own required options. */
function actionCommand(verb: string, summary: string, required: ReadonlyArray<'volumeSize' | 'flavorRef'>, action: (o: { volumeSize?: number; flavorRef?: string }) => JsonObject): AnyCommand {
  return defineCommand({
    path: ['instance', verb], summary, required: ['instanceRef', ...required], optional: [...API, 'wait'], positional: 'instanceRef',
    run: async (o, io) => {
      const c = new TroveApiClient(o);
      const id = await c.instanceId(o.instanceRef);
      await c.request('POST', `/instances/${id}/action`, action(o));
      let inst = (await c.get(`/instances/${id}`)).instance as JsonObject;
      if (o.wait) {
        await new Promise((r) => setTimeout(r, 300));
        inst = (await waitFor(c, io, 'instance', id)) ?? inst;
      }
      show(io, o.json, inst);
      return o.wait && failed(inst) ? 1 : 0;
    },
  });
}

/** After --wait: the operation failed when the instance is not ACTIVE or carries a fault (the task's reason). */
function failed(inst: JsonObject): boolean {
  return inst.status !== 'ACTIVE' || inst.fault !== undefined;
}
