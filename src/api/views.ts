// Trove's response shapes (api-ref and what python-troveclient reads), built from state rows.
import type { Row } from '../state/index.js';
import { GiB } from '../compute/driver.js';
import { DATASTORE, stableId } from '../tasks/control.js';
import type { EngineInfo } from '../compute/driver.js';
import { storedValues } from '../tasks/configurations.js';
import type { InstanceFacts } from '../tasks/facts.js';
import type { Progress } from '../backup/index.js';
import { keys as repoKeys } from '../backup/format.js';

export interface Link {
  href: string;
  rel: string;
}

/** Trove prints times without zone or fraction (UTC). */
export function troveTime(iso: string): string {
  return iso.replace(/\.\d+Z$/, '').replace(/Z$/, '');
}

export function links(base: string, project: string, kind: string, id: string): Link[] {
  return [
    { href: `${base}/v1.0/${project}/${kind}/${encodeURIComponent(id)}`, rel: 'self' },
    { href: `${base}/${kind}/${encodeURIComponent(id)}`, rel: 'bookmark' },
  ];
}

export function flavorView(base: string, project: string, f: Row<'flavors'>): Record<string, unknown> {
  return { id: f.id, str_id: f.id, name: f.name, ram: f.ram, vcpus: f.vcpus, disk: 0, links: links(base, project, 'flavors', f.id) };
}

export interface InstanceExtras {
  used: number | null;
  replicas: string[];
  configuration?: Row<'configurations'> | undefined;
  engine: EngineInfo;
  isolationWarning?: string | undefined;
  detail: boolean;
  facts?: InstanceFacts;
}

/** GB with two decimals, as people read a volume (the bytes are beside it). */
export function gb2(bytes: number): number {
  return Math.round((bytes / GiB) * 100) / 100;
}

export function instanceView(base: string, inst: Row<'instances'>, region: string, x: InstanceExtras): Record<string, unknown> {
  const v: Record<string, unknown> = {
    id: inst.id,
    name: inst.name,
    status: inst.status,
    flavor: { id: inst.flavor_id, links: links(base, inst.project_id, 'flavors', inst.flavor_id) },
    volume: { size: inst.volume_size } as Record<string, unknown>,
    datastore: { type: inst.datastore, version: inst.datastore_version },
    region,
    links: links(base, inst.project_id, 'instances', inst.id),
  };
  if (inst.host) {
    v.ip = [inst.host];
    v.hostname = inst.host;
    v.addresses = [{ address: inst.host, type: 'private' }];
  }
  // Trove's field: the cluster an instance is a member of.
  if (inst.cluster_id) v.cluster_id = inst.cluster_id;
  if (inst.replica_of) v.replica_of = { id: inst.replica_of, links: links(base, inst.project_id, 'instances', inst.replica_of) };
  if (x.detail) {
    v.created = troveTime(inst.created);
    v.updated = troveTime(inst.updated);
    const vol = v.volume as Record<string, unknown>;
    if (inst.volume_size > 0) vol.size_bytes = inst.volume_size * GiB;
    if (x.used !== null) {
      vol.used = gb2(x.used);
      vol.used_bytes = x.used;
      // Client writes are refused from here on (403 volume full) until it grows or data is removed.
      if (inst.volume_size > 0 && x.used >= inst.volume_size * GiB) vol.full = true;
    }
    const f = x.facts;
    if (f) {
      // Trove's datastore.version_number (what `openstack database instance show` prints): the running CouchDB's own.
      if (f.version) (v.datastore as Record<string, unknown>).version_number = f.version;
      if (f.flavorName) (v.flavor as Record<string, unknown>).name = f.flavorName;
      if (f.data) v.data = { databases: f.data.databases, documents: f.data.documents, size: gb2(f.data.fileBytes), size_bytes: f.data.fileBytes, active_bytes: f.data.activeBytes };
      if (f.pendingRestart) v.pending_restart = f.pendingRestart;
      if (f.task) v.task = f.task;
      if (f.progress) v.progress = withPercent(f.progress);
      if (f.lastBackup) {
        const b = f.lastBackup;
        v.last_backup = { id: b.id, name: b.name, created: troveTime(b.created), completed: troveTime(b.updated), size: b.size_bytes === null ? null : gb2(b.size_bytes), size_bytes: b.size_bytes, incremental: b.parent_id !== null };
      }
    }
    if (x.replicas.length > 0) v.replicas = x.replicas.map((id) => ({ id, links: links(base, inst.project_id, 'instances', id) }));
    if (x.configuration) v.configuration = { id: x.configuration.id, name: x.configuration.name, links: links(base, inst.project_id, 'configurations', x.configuration.id) };
    if (inst.port && inst.host) v.couchdb_url = `http://${inst.host}:${inst.port}`;
    v.engine = inst.engine ?? x.engine.kind;
    if ((inst.engine ?? x.engine.kind) === 'devengine' && x.engine.warning) v.engine_warning = x.engine.warning;
    if (x.isolationWarning) v.isolation_warning = x.isolationWarning;
    // Shown in every state: a failed detach, promote or configuration leaves the instance ACTIVE with its reason.
    if (inst.fault) {
      v.fault = { message: inst.fault, created: troveTime(inst.updated), details: inst.fault };
    }
  }
  return v;
}

/** The engine's progress as the API shows it (snake_case, as every field of the API), with the percent done. */
function withPercent(p: Progress): Record<string, unknown> {
  return {
    phase: p.phase, bytes_done: p.bytesDone, bytes_total: p.bytesTotal, files_done: p.filesDone, files_total: p.filesTotal,
    percent: p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 0,
  };
}

/** An extension's answer with snake_case keys (the agent's camelCase results: docCount, totalMs), all levels down. */
export function snakeKeys(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(snakeKeys);
  if (typeof x !== 'object' || x === null) return x;
  return Object.fromEntries(Object.entries(x).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeKeys(v)]));
}

export function round(n: number): number {
  if (n === 0) return 0;
  // Keep tiny sizes visible: 6 significant digits.
  return Number(n.toPrecision(6));
}

export function backupView(base: string, b: Row<'backups'>): Record<string, unknown> {
  const v: Record<string, unknown> = {
    id: b.id,
    name: b.name,
    description: b.description,
    status: b.status,
    instance_id: b.instance_id,
    // couchtrove extension: a cluster backup names its cluster (instance_id is then null).
    cluster_id: b.cluster_id ?? null,
    parent_id: b.parent_id,
    // Where the backup's objects are: the repository's backups/<id>/ (docs/backup-format.md), not <repository>/<id>.
    locationRef: b.status === 'COMPLETED' && b.location ? `${b.location.replace(/\/$/, '')}/${repoKeys.dir(b.id)}` : null,
    size: b.size_bytes === null ? null : round(b.size_bytes / GiB),
    size_bytes: b.size_bytes,
    // couchtrove extension: the bytes of CouchDB's files the backup covers (size_bytes is what it stores).
    data_bytes: b.data_bytes,
    checksum: b.checksum,
    files: b.files,
    created: troveTime(b.created),
    updated: troveTime(b.updated),
    project_id: b.project_id,
    datastore: { type: b.datastore, version: b.datastore_version, version_id: stableId('version', `${DATASTORE}:${b.datastore_version}`) },
    links: links(base, b.project_id, 'backups', b.id),
  };
  if (b.progress) {
    try {
      v.progress = withPercent(JSON.parse(b.progress) as Progress);
    } catch {
      // no progress
    }
  }
  const parts = b.cluster ? (JSON.parse(b.cluster) as { parts: Array<{ id: string; node: string; shards: unknown[] }> }).parts : null;
  if (parts) v.cluster_parts = parts.map((p) => ({ id: p.id, node: p.node, ranges: p.shards.length }));
  if (b.fail_reason && (b.status === 'FAILED' || b.status === 'DELETE_FAILED')) v.fail_reason = b.fail_reason;
  // Verify (src/tasks/verify.ts): null until the backup was first verified.
  v.verified_at = b.verified_at ? troveTime(b.verified_at) : null;
  v.verify_result = b.verify_result ?? null;
  return v;
}

export function versionView(base: string, project: string, v: Row<'datastore_versions'>): Record<string, unknown> {
  return {
    id: v.id, name: v.name, datastore: stableId('datastore', DATASTORE), active: v.active, image: '', packages: '', version: v.name,
    links: links(base, project, `datastores/versions`, v.id),
  };
}

export function datastoreView(base: string, project: string, versions: Row<'datastore_versions'>[]): Record<string, unknown> {
  const id = stableId('datastore', DATASTORE);
  const active = versions.filter((v) => v.active === 1);
  const def = active.find((v) => v.is_default === 1) ?? active[0];
  const v: Record<string, unknown> = {
    id, name: DATASTORE, links: links(base, project, 'datastores', id),
    versions: active.map((x) => ({ id: x.id, name: x.name, links: links(base, project, 'datastores/versions', x.id) })),
  };
  if (def) v.default_version = def.id;
  return v;
}

export function configurationView(base: string, c: Row<'configurations'>, instanceCount: number, detail: boolean): Record<string, unknown> {
  const v: Record<string, unknown> = {
    id: c.id, name: c.name, description: c.description, datastore_name: c.datastore, datastore_version_name: c.datastore_version,
    datastore_version_id: stableId('version', `${DATASTORE}:${c.datastore_version}`), created: troveTime(c.created), updated: troveTime(c.updated),
    instance_count: instanceCount, links: links(base, c.project_id, 'configurations', c.id),
  };
  if (detail) v.values = storedValues(c);
  return v;
}
