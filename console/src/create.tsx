// Create an instance: flavor, volume, databases, users, from a backup (or a restore point), as a replica.
import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import { when, type Backup, type Configuration, type Flavor, type Instance } from './api.js';
import { Notice, navigate, useAction, useApi, usePoll } from './ui.js';

interface UserRow {
  name: string;
  password: string;
  databases: string;
  admin: boolean;
}

const names = (s: string): string[] => s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

export function CreateInstance({ query }: { query: URLSearchParams }): JSX.Element {
  const api = useApi();
  const refs = usePoll(async () => {
    const [flavors, backups, instances, configurations] = await Promise.all([api.flavors(), api.backups(), api.instancesBrief(), api.configurations()]);
    return { flavors, backups: backups.filter((b) => b.status === 'COMPLETED'), instances, configurations };
  }, 0, []);
  const [name, setName] = useState('');
  const [flavor, setFlavor] = useState('');
  const [size, setSize] = useState('1');
  const [dbs, setDbs] = useState('');
  const [users, setUsers] = useState<UserRow[]>([]);
  const [source, setSource] = useState<'empty' | 'backup' | 'replica'>(query.get('backup') ? 'backup' : query.get('replica_of') ? 'replica' : 'empty');
  const [backup, setBackup] = useState(query.get('backup') ?? '');
  const [restoreTime, setRestoreTime] = useState(query.get('restore_time') ?? '');
  const [replicaOf, setReplicaOf] = useState(query.get('replica_of') ?? '');
  const [configuration, setConfiguration] = useState('');
  const [run, busy, error] = useAction();
  const r = refs.data;
  const flavors: Flavor[] = r?.flavors ?? [];
  const backups: Backup[] = r?.backups ?? [];
  const instances: Instance[] = r?.instances ?? [];
  const confs: Configuration[] = r?.configurations ?? [];
  const instName = (id: string): string => instances.find((i) => i.id === id)?.name ?? id.slice(0, 8);
  const setUser = (i: number, patch: Partial<UserRow>): void => setUsers(users.map((u, j) => (j === i ? { ...u, ...patch } : u)));

  const submit = (): void => {
    const body: Record<string, unknown> = { name: name.trim(), volume: { size: Number(size) }, datastore: { type: 'couchdb' } };
    if (source !== 'replica') body.flavorRef = flavor || flavors[0]?.id;
    else if (flavor) body.flavorRef = flavor;
    if (dbs.trim()) body.databases = names(dbs).map((n) => ({ name: n }));
    if (users.length) {
      body.users = users.map((u) => ({ name: u.name.trim(), password: u.password, databases: names(u.databases).map((d) => ({ name: d, ...(u.admin ? { role: 'admin' } : {}) })) }));
    }
    if (source === 'backup') body.restorePoint = { backupRef: backup, ...(restoreTime ? { restoreTime } : {}) };
    if (source === 'replica') body.replica_of = replicaOf;
    if (configuration) body.configuration = configuration;
    void run(async () => {
      const res = await api.request<{ instance: Instance }>('POST', '/instances', { instance: body });
      navigate(`#/instances/${res.instance.id}`);
    });
  };

  return (
    <main data-ready={r ? 'true' : undefined} class="narrow">
      <p class="crumbs"><a href="#/instances">Instances</a> ›</p>
      <h1>Create instance</h1>
      {refs.error ? <Notice kind="error">{refs.error}</Notice> : null}
      <form
        class="form"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <label>
          Name
          <input name="name" value={name} onInput={(e) => setName(e.currentTarget.value)} required maxLength={255} placeholder="orders-db" />
        </label>
        <fieldset>
          <legend>Start from</legend>
          <div class="radios">
            <label class="inline"><input type="radio" name="source" checked={source === 'empty'} onChange={() => setSource('empty')} /> empty</label>
            <label class="inline"><input type="radio" name="source" checked={source === 'backup'} onChange={() => setSource('backup')} disabled={backups.length === 0} /> a backup or restore point</label>
            <label class="inline"><input type="radio" name="source" checked={source === 'replica'} onChange={() => setSource('replica')} disabled={instances.length === 0} /> a replica of an instance</label>
          </div>
          {source === 'backup' ? (
            <div class="row">
              <label>
                Backup
                <select name="backup" value={backup} onChange={(e) => setBackup(e.currentTarget.value)} required>
                  <option value="">choose…</option>
                  {backups.map((b) => <option value={b.id} key={b.id}>{`${b.name} — ${instName(b.instance_id)}, ${when(b.created)}`}</option>)}
                </select>
              </label>
              <label>
                Restore time (optional, ISO 8601 UTC: the archive's state at that time)
                <input name="restore_time" value={restoreTime} onInput={(e) => setRestoreTime(e.currentTarget.value)} placeholder="2026-12-07T10:15:00Z" />
              </label>
            </div>
          ) : null}
          {source === 'replica' ? (
            <label>
              Replica of
              <select name="replica_of" value={replicaOf} onChange={(e) => setReplicaOf(e.currentTarget.value)} required>
                <option value="">choose…</option>
                {instances.filter((i) => !i.replica_of).map((i) => <option value={i.id} key={i.id}>{i.name}</option>)}
              </select>
            </label>
          ) : null}
        </fieldset>
        <div class="row">
          <label>
            Flavor{source === 'replica' ? ' (default: the source’s)' : ''}
            <select name="flavor" value={flavor || (source === 'replica' ? '' : flavors[0]?.id ?? '')} onChange={(e) => setFlavor(e.currentTarget.value)}>
              {source === 'replica' ? <option value="">as the source</option> : null}
              {flavors.map((f) => <option value={f.id} key={f.id}>{`${f.name} — ${f.vcpus} vCPU, ${f.ram} MB`}</option>)}
            </select>
          </label>
          <label>
            Volume (GB)
            <input name="size" type="number" min={1} value={size} onInput={(e) => setSize(e.currentTarget.value)} required />
          </label>
          <label>
            Configuration group
            <select name="configuration" value={configuration} onChange={(e) => setConfiguration(e.currentTarget.value)}>
              <option value="">none</option>
              {confs.map((c) => <option value={c.id} key={c.id}>{c.name}</option>)}
            </select>
          </label>
        </div>
        {source === 'empty' ? (
          <>
            <label>
              Databases (comma or space separated)
              <input name="databases" value={dbs} onInput={(e) => setDbs(e.currentTarget.value)} placeholder="orders, invoices" />
            </label>
            <fieldset>
              <legend>Users</legend>
              {users.map((u, i) => (
                <div class="row user-row" key={i}>
                  <label>Name<input name={`user-${i}-name`} value={u.name} onInput={(e) => setUser(i, { name: e.currentTarget.value })} required /></label>
                  <label>Password<input name={`user-${i}-password`} type="password" value={u.password} onInput={(e) => setUser(i, { password: e.currentTarget.value })} required autoComplete="new-password" /></label>
                  <label>Databases<input name={`user-${i}-databases`} value={u.databases} onInput={(e) => setUser(i, { databases: e.currentTarget.value })} /></label>
                  <label class="inline"><input type="checkbox" checked={u.admin} onChange={(e) => setUser(i, { admin: e.currentTarget.checked })} /> admin (design documents)</label>
                  <button type="button" class="small" onClick={() => setUsers(users.filter((_, j) => j !== i))} aria-label={`Remove user ${i + 1}`}>Remove</button>
                </div>
              ))}
              <button type="button" onClick={() => setUsers([...users, { name: '', password: '', databases: dbs, admin: false }])}>Add user</button>
            </fieldset>
          </>
        ) : null}
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons">
          <a class="button" href="#/instances">Cancel</a>
          <button type="submit" class="primary" disabled={busy || !r}>{busy ? 'Creating…' : 'Create instance'}</button>
        </div>
      </form>
    </main>
  );
}
