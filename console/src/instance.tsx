// One instance: how to connect, its fault, live task progress, restart, resize, delete, configuration
// group, and tabs for databases, users, backups, restore points and replicas.
import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import { FINAL_BACKUP, FINAL_INSTANCE, ago, bytes, when, type Backup, type Instance } from './api.js';
import { Databases, Users } from './access.js';
import { BackupTable, CreateBackup } from './backups.js';
import { RestorePoints } from './restore.js';
import { Schedules } from './schedules.js';
import { engineLabel, Volume } from './instances.js';
import { ConfirmDelete, Copyable, Dialog, LiveProgress, Notice, Status, navigate, useAction, useApi, usePoll } from './ui.js';

const enc = encodeURIComponent;
const TABS: Array<[string, string]> = [['overview', 'Overview'], ['databases', 'Databases'], ['users', 'Users'], ['backups', 'Backups'], ['restore-points', 'Restore points'], ['replicas', 'Replicas']];

export function InstancePage({ id, tab }: { id: string; tab: string }): JSX.Element {
  const api = useApi();
  // Every 2 s: status, task step and progress follow without a reload.
  const inst = usePoll(() => api.instance(id), 2000, [id]);
  const [busyBackups, setBusyBackups] = useState(false);
  const side = usePoll(async () => {
    const [backups, instances] = await Promise.all([api.backups(id), api.instancesBrief()]);
    setBusyBackups(backups.some((b) => !FINAL_BACKUP.has(b.status) || b.verify_result === 'running'));
    return { backups, instances };
  }, busyBackups ? 1000 : 5000, [id]);
  // The page starts from the brief listing (status, flavor, volume, role, archive as last seen), so it shows at
  // once and a tab's own calls run beside the instance's show; the show (which asks the agent: address, volume
  // used, data, replication, live archive) fills in when it answers.
  const i = inst.data ?? side.data?.instances.find((x) => x.id === id);
  if (!i) {
    return (
      <main>
        <p class="crumbs"><a href="#/instances">Instances</a> ›</p>
        {inst.error ? <Notice kind="error">{inst.error}</Notice> : <p class="muted">Loading…</p>}
      </main>
    );
  }
  const backups = side.data?.backups ?? [];
  const instances = side.data?.instances ?? [];
  return (
    <main data-ready={side.data ? 'true' : undefined} data-live={inst.data ? 'true' : undefined}>
      <p class="crumbs"><a href="#/instances">Instances</a> ›</p>
      <Header i={i} onChange={inst.reload} />
      {inst.error ? <Notice kind="error">{`Could not refresh: ${inst.error}`}</Notice> : null}
      {i.fault ? <Notice kind="error"><strong>Fault</strong> ({when(i.fault.created)}): {i.fault.message}</Notice> : null}
      {i.task || !FINAL_INSTANCE.has(i.status) ? <LiveProgress progress={i.progress} state={i.status} step={i.progress?.phase ?? i.task?.step ?? i.task?.kind} /> : null}
      <nav class="tabs" aria-label="Instance sections">
        {TABS.map(([k, label]) => <a key={k} href={`#/instances/${enc(i.id)}/${k}`} aria-current={tab === k ? 'page' : undefined}>{label}</a>)}
      </nav>
      {tab === 'overview' ? <Overview i={i} live={inst.data !== undefined} instances={instances} onChange={inst.reload} /> : null}
      {tab === 'databases' ? <Databases instance={i} backups={backups} /> : null}
      {tab === 'users' ? <Users instance={i} /> : null}
      {tab === 'backups' ? <InstanceBackups i={i} backups={side.data ? backups : undefined} instances={instances} onChange={side.reload} /> : null}
      {tab === 'restore-points' ? <RestorePoints instance={i} backups={backups} onChange={inst.reload} /> : null}
      {tab === 'replicas' ? <Replicas i={i} onChange={() => { inst.reload(); side.reload(); }} /> : null}
    </main>
  );
}

function Header({ i, onChange }: { i: Instance; onChange: () => void }): JSX.Element {
  const api = useApi();
  const [dialog, setDialog] = useState<'resize' | 'delete' | null>(null);
  const [run, busy, error] = useAction();
  return (
    <>
      <div class="title-row">
        <h1>{i.name} <Status value={i.status} /></h1>
        <div class="buttons">
          <button type="button" disabled={busy || i.status !== 'ACTIVE' && i.status !== 'RESTART_REQUIRED' && i.status !== 'SHUTDOWN'} onClick={() => void run(() => api.action(i.id, { restart: {} })).then(onChange)}>Restart</button>
          <button type="button" disabled={i.status !== 'ACTIVE'} onClick={() => setDialog('resize')}>Resize…</button>
          <button type="button" class="danger-outline" onClick={() => setDialog('delete')}>Delete…</button>
        </div>
      </div>
      {error ? <Notice kind="error">{error}</Notice> : null}
      {dialog === 'resize' ? <Resize i={i} onClose={() => setDialog(null)} onDone={onChange} /> : null}
      {dialog === 'delete' ? (
        <ConfirmDelete
          what="instance" name={i.name} onClose={() => setDialog(null)}
          note="Its CouchDB, data and volume go; its backups stay."
          onConfirm={async () => {
            await api.request('DELETE', `/instances/${enc(i.id)}`);
            navigate('#/instances');
          }}
        />
      ) : null}
    </>
  );
}

function Resize({ i, onClose, onDone }: { i: Instance; onClose: () => void; onDone: () => void }): JSX.Element {
  const api = useApi();
  const flavors = usePoll(() => api.flavors(), 0, []);
  const [flavor, setFlavor] = useState(i.flavor.id);
  const [size, setSize] = useState(String(i.volume.size));
  const [run, busy, error] = useAction();
  const go = (body: unknown): void => void run(() => api.action(i.id, { resize: body })).then((ok) => { if (ok) { onDone(); onClose(); } });
  return (
    <Dialog title={`Resize ${i.name}`} onClose={onClose}>
      <form class="inline-form" onSubmit={(e) => { e.preventDefault(); go({ flavorRef: flavor }); }}>
        <label>Flavor<select value={flavor} onChange={(e) => setFlavor(e.currentTarget.value)}>{(flavors.data ?? []).map((f) => <option key={f.id} value={f.id}>{`${f.name} — ${f.vcpus} vCPU, ${f.ram} MB`}</option>)}</select></label>
        <button type="submit" disabled={busy || flavor === i.flavor.id}>Resize flavor</button>
      </form>
      <form class="inline-form" onSubmit={(e) => { e.preventDefault(); go({ volume: { size: Number(size) } }); }}>
        <label>Volume (GB)<input type="number" min={i.volume.size} value={size} onInput={(e) => setSize(e.currentTarget.value)} /></label>
        <button type="submit" disabled={busy || Number(size) === i.volume.size}>Resize volume</button>
      </form>
      {error ? <Notice kind="error">{error}</Notice> : null}
      <div class="buttons"><button type="button" onClick={onClose}>Close</button></div>
    </Dialog>
  );
}

function Overview({ i, live, instances, onChange }: { i: Instance; live: boolean; instances: Instance[]; onChange: () => void }): JSX.Element {
  const host = i.couchdb_url;
  return (
    <section aria-label="Overview">
      {i.engine === 'devengine' ? <Notice kind="warn">{i.engine_warning ?? 'This instance runs on the development engine, a stand-in for Apache CouchDB.'}</Notice> : null}
      {i.isolation_warning ? <Notice kind="warn">{i.isolation_warning}</Notice> : null}
      <h2>Connect</h2>
      {host ? (
        <>
          <p class="muted">CouchDB’s HTTP API, with one of the instance’s users (curl asks for the password):</p>
          <Copyable text={`curl -u USER ${host}/_all_dbs`} label="curl line" />
        </>
      ) : <p class="muted">{live ? 'No address yet.' : 'Asking the instance’s agent…'}</p>}
      <div class="facts">
        <div><span class="k">Address</span><span class="mono">{host ?? (live ? '—' : '…')}</span></div>
        <div><span class="k">Engine</span><span>{live ? engineLabel(i) : '…'}</span></div>
        <div><span class="k">Flavor</span><span>{i.flavor.name ?? i.flavor.id}</span></div>
        <div><span class="k">Volume</span><Volume i={i} /></div>
        <div><span class="k">Data</span><span>{i.data ? `${i.data.databases} databases, ${i.data.documents} documents, ${bytes(i.data.size_bytes)}` : live ? '—' : '…'}</span></div>
        <div><span class="k">Role</span><span>{i.replica_of ? <>replica of <a href={`#/instances/${i.replica_of.id}`}>{instances.find((x) => x.id === i.replica_of!.id)?.name ?? i.replica_of.id}</a></> : `primary${i.replicas?.length ? `, ${i.replicas.length} replica(s)` : ''}`}</span></div>
        <div><span class="k">Last backup</span><span>{i.last_backup ? `${i.last_backup.name}, ${ago(i.last_backup.completed)}` : live ? 'none' : '…'}</span></div>
        <div><span class="k">Created</span><span>{when(i.created)}</span></div>
        <div><span class="k">Id</span><span class="mono">{i.id}</span></div>
      </div>
      <ConfigurationGroup i={i} onChange={onChange} />
    </section>
  );
}

function ConfigurationGroup({ i, onChange }: { i: Instance; onChange: () => void }): JSX.Element {
  const api = useApi();
  const confs = usePoll(() => api.configurations(), 10_000, []);
  const [pick, setPick] = useState('');
  const [creating, setCreating] = useState(false);
  const [run, busy, error] = useAction();
  const set = (configuration: string | null): void => void run(() => api.request('PUT', `/instances/${enc(i.id)}`, { instance: { configuration } })).then(onChange);
  const pending = i.pending_restart;
  return (
    <div data-ready={confs.data ? 'true' : 'false'}>
      <div class="title-row">
        <h2>Configuration group</h2>
        <button type="button" class="small" onClick={() => setCreating(true)}>New group…</button>
      </div>
      {i.configuration ? (
        <p>Attached: <strong>{i.configuration.name}</strong>{' '}
          <button type="button" class="small" disabled={busy} onClick={() => set(null)}>Detach</button></p>
      ) : (
        <form class="inline-form" onSubmit={(e) => { e.preventDefault(); set(pick); }}>
          <label>Group<select name="configuration" value={pick} onChange={(e) => setPick(e.currentTarget.value)} required>
            <option value="">choose…</option>
            {(confs.data ?? []).map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
          </select></label>
          <button type="submit" disabled={busy || !pick}>Attach</button>
          {confs.data?.length === 0 ? <span class="muted small">No configuration groups in this project yet: make one with New group….</span> : null}
        </form>
      )}
      {Array.isArray(pending) && pending.length ? (
        <Notice kind="warn">
          <span data-testid="pending-restart">Waiting for a restart (Restart above applies them): <code>{pending.join(', ')}</code></span>
        </Notice>
      ) : null}
      {error ? <Notice kind="error">{error}</Notice> : null}
      {creating ? <CreateConfiguration i={i} onClose={() => setCreating(false)} onDone={(id) => { confs.reload(); setPick(id); }} /> : null}
    </div>
  );
}

interface ValueRow {
  name: string;
  value: string;
}

/** A configuration group from the published allow-list of parameters (each typed, with its range, and whether it needs a restart). */
function CreateConfiguration({ i, onClose, onDone }: { i: Instance; onClose: () => void; onDone: (id: string) => void }): JSX.Element {
  const api = useApi();
  const params = usePoll(() => api.parameters(i.datastore.version), 0, [i.datastore.version]);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [rows, setRows] = useState<ValueRow[]>([{ name: '', value: '' }]);
  const [run, busy, error] = useAction();
  const byName = new Map((params.data ?? []).map((p) => [p.name, p]));
  const update = (k: number, row: ValueRow): void => setRows(rows.map((r, j) => (j === k ? row : r)));
  const typed = (r: ValueRow): unknown => {
    const p = byName.get(r.name);
    return p?.type === 'integer' ? Number(r.value) : p?.type === 'boolean' ? r.value === 'true' : r.value;
  };
  return (
    <Dialog title="New configuration group" onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const values = Object.fromEntries(rows.filter((r) => r.name).map((r) => [r.name, typed(r)]));
          void run(async () => {
            const r = await api.request<{ configuration: { id: string } }>('POST', '/configurations', { configuration: { name, ...(description ? { description } : {}), values, datastore: { type: i.datastore.type, version: i.datastore.version } } });
            onDone(r.configuration.id);
          }).then((ok) => ok && onClose());
        }}
      >
        <label>Name<input name="configuration-name" value={name} onInput={(e) => setName(e.currentTarget.value)} required autoFocus /></label>
        <label>Description<input name="configuration-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} /></label>
        <fieldset>
          <legend>Values (CouchDB {i.datastore.version}’s allowed parameters; “restart”: applied at the next restart)</legend>
          {params.error ? <Notice kind="error">{params.error}</Notice> : null}
          {rows.map((r, k) => {
            const p = byName.get(r.name);
            return (
              <div class="row" key={k}>
                <label>Parameter<select name={`param-${k}`} value={r.name} onChange={(e) => update(k, { name: e.currentTarget.value, value: '' })} required={k === 0}>
                  <option value="">choose…</option>
                  {(params.data ?? []).map((x) => <option key={x.name} value={x.name}>{`${x.name}${x.restart_required ? ' (restart)' : ''}`}</option>)}
                </select></label>
                <label>Value{p?.type === 'boolean' ? (
                  <select name={`value-${k}`} value={r.value} onChange={(e) => update(k, { ...r, value: e.currentTarget.value })} required><option value="">choose…</option><option value="true">true</option><option value="false">false</option></select>
                ) : (
                  <input name={`value-${k}`} type={p?.type === 'integer' ? 'number' : 'text'} min={p?.min} max={p?.max} value={r.value} disabled={!p}
                    placeholder={p?.type === 'integer' ? `${p.min ?? ''} to ${p.max ?? ''}` : ''} onInput={(e) => update(k, { ...r, value: e.currentTarget.value })} required={!!p} />
                )}</label>
              </div>
            );
          })}
          <button type="button" class="small" onClick={() => setRows([...rows, { name: '', value: '' }])}>Add a value</button>
        </fieldset>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons">
          <button type="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="primary" disabled={busy || !params.data}>Create group</button>
        </div>
      </form>
    </Dialog>
  );
}

function InstanceBackups({ i, backups, instances, onChange }: { i: Instance; backups: Backup[] | undefined; instances: Instance[]; onChange: () => void }): JSX.Element {
  const api = useApi();
  const [creating, setCreating] = useState(false);
  // Schedules change rarely; a run's last result shows within 10 s.
  const schedules = usePoll(() => api.schedules(i.id), 10_000, [i.id]);
  return (
    <>
      <section aria-label="Backups" data-ready={backups ? 'true' : 'false'}>
        <div class="title-row">
          <h2>Backups of {i.name}</h2>
          <button type="button" class="primary" disabled={i.status !== 'ACTIVE'} onClick={() => setCreating(true)}>Back up now…</button>
        </div>
        {backups ? <BackupTable backups={backups} instances={instances} onChange={onChange} showInstance={false} /> : <p class="muted">Loading…</p>}
        {creating && backups ? <CreateBackup instance={i} backups={backups} onDone={onChange} onClose={() => setCreating(false)} /> : null}
      </section>
      <Schedules instance={i} list={schedules} />
    </>
  );
}

function Replicas({ i, onChange }: { i: Instance; onChange: () => void }): JSX.Element {
  const api = useApi();
  // The primary and each replica with its replication state and lag per database: the family from the brief
  // listing, then every show at once (each asks its agent), not one after the other.
  const members = usePoll(async () => {
    const brief = await api.instancesBrief();
    const primaryId = brief.find((x) => x.id === i.id)?.replica_of?.id ?? i.id;
    return { primary: brief.find((x) => x.id === primaryId) ?? i, replicas: brief.filter((x) => x.replica_of?.id === primaryId) };
  }, 3000, [i.id]);
  const ids = members.data ? [members.data.primary.id, ...members.data.replicas.map((r) => r.id)] : [];
  // Each one's show: its replication state and lag per database, as its agent says.
  const shows = usePoll(async () => new Map((await Promise.all(ids.map((x) => api.instance(x)))).map((x) => [x.id, x])), 3000, [ids.join(',')]);
  const liveReady = ids.length > 0 && ids.every((x) => shows.data?.has(x));
  const live = (x: Instance): Instance => shows.data?.get(x.id) ?? x;
  const family = { data: members.data ? { primary: live(members.data.primary), replicas: members.data.replicas.map(live) } : undefined, error: members.error ?? shows.error, reload: () => { members.reload(); shows.reload(); } };
  const [run, busy, error] = useAction();
  const act = (f: () => Promise<unknown>): void => void run(f).then(() => { family.reload(); onChange(); });
  const f = family.data;
  return (
    <section aria-label="Replicas" data-ready={f ? 'true' : 'false'} data-live={liveReady ? 'true' : undefined}>
      <div class="title-row">
        <h2>Replication</h2>
        {!i.replica_of ? <a class="button primary" href={`#/instances/new?replica_of=${enc(i.id)}`}>Add replica…</a> : null}
      </div>
      {family.error ? <Notice kind="error">{family.error}</Notice> : null}
      {error ? <Notice kind="error">{error}</Notice> : null}
      {f ? (
        <>
          <p>Primary: <a href={`#/instances/${f.primary.id}`} class="strong">{f.primary.name}</a> <Status value={f.primary.status} />{' '}
            {f.replicas.length ? <button type="button" class="small danger-outline" disabled={busy} title="When the primary is lost: its most complete replica becomes the source, the others follow it" onClick={() => act(() => api.action(f.primary.id, { eject_replica_source: {} }))}>Eject the primary</button> : null}</p>
          {f.replicas.length === 0 ? <p class="muted">No replicas.</p> : (
            <div class="table-wrap">
              <table class="list" aria-label="Replicas">
                <thead><tr><th>Replica</th><th>State</th><th>Lag per database</th><th><span class="sr-only">Actions</span></th></tr></thead>
                <tbody>
                  {f.replicas.map((r) => (
                    <tr key={r.id}>
                      <td><a href={`#/instances/${r.id}`} class="strong">{r.name}</a> <Status value={r.status} /></td>
                      <td>{r.replication ? <Status value={r.replication.state} /> : liveReady ? '—' : '…'}{r.replication?.errors.map((e) => <div class="small bad-text" key={e}>{e}</div>)}</td>
                      <td>{r.replication?.databases.map((d) => <div key={d.name} class="small"><span class="mono">{d.name}</span>: {d.state}, lag {d.lag ?? '?'}</div>) ?? (liveReady ? '—' : '…')}</td>
                      <td class="actions">
                        <button type="button" class="small" disabled={busy} onClick={() => act(() => api.request('PATCH', `/instances/${enc(r.id)}`, { instance: { replica_of: null } }))}>Detach</button>
                        <button type="button" class="small" disabled={busy} onClick={() => act(() => api.action(r.id, { promote_to_replica_source: {} }))}>Promote</button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      ) : <p class="muted">Loading…</p>}
    </section>
  );
}
