// Databases and users of an instance: create, delete, grant/revoke with a role, change a password, one
// database back from a backup, and root (its generated password shown once).
import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import type { Backup, Instance, UserView } from './api.js';
import { when } from './api.js';
import { ConfirmDelete, Copyable, Dialog, Notice, useAction, useApi, usePoll } from './ui.js';

const enc = encodeURIComponent;

export function Databases({ instance, backups }: { instance: Instance; backups: Backup[] }): JSX.Element {
  const api = useApi();
  const list = usePoll(() => api.databases(instance.id), 0, [instance.id]);
  const [name, setName] = useState('');
  const [deleting, setDeleting] = useState<string | null>(null);
  const [restoring, setRestoring] = useState<string | null>(null);
  const [run, busy, error] = useAction();
  const create = (): void => {
    void run(() => api.request('POST', `/instances/${enc(instance.id)}/databases`, { databases: [{ name: name.trim() }] })).then((ok) => {
      if (ok) {
        setName('');
        list.reload();
      }
    });
  };
  return (
    <section data-ready={list.data ? 'true' : 'false'} aria-label="Databases">
      <form class="inline-form" onSubmit={(e) => { e.preventDefault(); create(); }}>
        <label>New database<input name="database" value={name} onInput={(e) => setName(e.currentTarget.value)} required placeholder="orders" /></label>
        <button type="submit" class="primary" disabled={busy}>Create database</button>
      </form>
      {error ? <Notice kind="error">{error}</Notice> : null}
      {list.error ? <Notice kind="error">{list.error}</Notice> : null}
      {list.data?.length === 0 ? <p class="muted">No databases.</p> : null}
      <ul class="rows">
        {(list.data ?? []).map((d) => (
          <li key={d}>
            <span class="strong mono">{d}</span>
            <span class="actions">
              <button type="button" class="small" onClick={() => setRestoring(d)} disabled={instance.status !== 'ACTIVE'}>Restore from a backup…</button>
              <button type="button" class="small danger-outline" onClick={() => setDeleting(d)}>Delete</button>
            </span>
          </li>
        ))}
      </ul>
      {deleting ? <ConfirmDelete what="database" name={deleting} onClose={() => setDeleting(null)} onConfirm={async () => { await api.request('DELETE', `/instances/${enc(instance.id)}/databases/${enc(deleting)}`); list.reload(); }} /> : null}
      {restoring ? <RestoreDatabase instance={instance} database={restoring} backups={backups} onClose={() => setRestoring(null)} onDone={list.reload} /> : null}
    </section>
  );
}

/** One database back from a backup or (time given) the instance's archive; as a new name or replacing it. */
export function RestoreDatabase({ instance, database, backups, time, onClose, onDone }: { instance: Instance; database: string; backups: Backup[]; time?: string; onClose: () => void; onDone: () => void }): JSX.Element {
  const api = useApi();
  const done = backups.filter((b) => b.status === 'COMPLETED' && b.instance_id === instance.id);
  const [backup, setBackup] = useState(time ? '' : done[0]?.id ?? '');
  const [as, setAs] = useState(`${database}_restored`);
  const [replace, setReplace] = useState(false);
  const [result, setResult] = useState<string | null>(null);
  const [run, busy, error] = useAction();
  return (
    <Dialog title={`Restore database ${database}${time ? ` as of ${time}` : ''}`} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const body = { restore: { ...(time ? { restore_time: time } : { backup }), ...(replace ? { replace: true } : { as }) } };
          void run(async () => {
            const r = await api.request<{ restore: { as: string; doc_count: number; total_ms: number; restored_from?: { cut?: string; cut_time?: string } } }>('POST', `/instances/${enc(instance.id)}/databases/${enc(database)}/restore`, body);
            const rf = r.restore.restored_from;
            setResult(`Restored into ${r.restore.as}: ${r.restore.doc_count} documents in ${(r.restore.total_ms / 1000).toFixed(1)} s${rf?.cut ? `, from cut ${rf.cut} (restore point ${rf.cut_time ?? '?'})` : ''}.`);
            onDone();
          });
        }}
      >
        {time ? <p>From the instance’s archive: the newest restore point at or before <strong>{time}</strong>.</p> : (
          <label>
            Backup
            <select value={backup} onChange={(e) => setBackup(e.currentTarget.value)} required>
              {done.map((b) => <option key={b.id} value={b.id}>{`${b.name} (${when(b.created)})`}</option>)}
            </select>
          </label>
        )}
        <label class="inline"><input type="checkbox" checked={replace} onChange={(e) => setReplace(e.currentTarget.checked)} /> replace the live database (it is deleted, then copied back)</label>
        {!replace ? <label>As (a new database)<input name="as" value={as} onInput={(e) => setAs(e.currentTarget.value)} required /></label> : null}
        {error ? <Notice kind="error">{error}</Notice> : null}
        {result ? <Notice kind="ok">{result}</Notice> : null}
        <div class="buttons">
          <button type="button" onClick={onClose}>{result ? 'Close' : 'Cancel'}</button>
          {result ? null : <button type="submit" class="primary" disabled={busy || (!time && !backup)}>{busy ? 'Restoring…' : 'Restore database'}</button>}
        </div>
      </form>
    </Dialog>
  );
}

export function Users({ instance }: { instance: Instance }): JSX.Element {
  const api = useApi();
  const data = usePoll(async () => {
    const [users, databases, root] = await Promise.all([api.users(instance.id), api.databases(instance.id), api.request<{ rootEnabled: boolean }>('GET', `/instances/${enc(instance.id)}/root`)]);
    return { users, databases, root: root.rootEnabled };
  }, 0, [instance.id]);
  const [adding, setAdding] = useState(false);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [rootPassword, setRootPassword] = useState<string | null>(null);
  const [run, busy, error] = useAction();
  const d = data.data;
  return (
    <section data-ready={d ? 'true' : 'false'} aria-label="Users">
      <div class="title-row">
        <h2>Users</h2>
        <button type="button" class="primary" onClick={() => setAdding(true)}>Add user</button>
      </div>
      {data.error ? <Notice kind="error">{data.error}</Notice> : null}
      {error ? <Notice kind="error">{error}</Notice> : null}
      {d?.users.length === 0 ? <p class="muted">No users.</p> : null}
      <ul class="rows">
        {(d?.users ?? []).map((u) => (
          <li key={u.name}>
            <span><span class="strong mono">{u.name}</span> <span class="muted small">{u.databases.map((x) => `${x.name} (${x.role})`).join(', ') || 'no databases'}</span></span>
            <span class="actions">
              <button type="button" class="small" onClick={() => setEditing(u.name)}>Access and password…</button>
              <button type="button" class="small danger-outline" onClick={() => setDeleting(u.name)}>Delete</button>
            </span>
          </li>
        ))}
      </ul>
      <h2>Root (CouchDB server admin)</h2>
      {d ? (
        <p>
          {d.root ? 'Enabled. ' : 'Disabled. '}
          <button type="button" disabled={busy} onClick={() => void run(async () => setRootPassword((await api.request<{ user: { password: string } }>('POST', `/instances/${enc(instance.id)}/root`)).user.password)).then(data.reload)}>{d.root ? 'Reset root password' : 'Enable root'}</button>{' '}
          {d.root ? <button type="button" class="danger-outline" disabled={busy} onClick={() => void run(() => api.request('DELETE', `/instances/${enc(instance.id)}/root`)).then(data.reload)}>Disable root</button> : null}
        </p>
      ) : null}
      {rootPassword ? (
        <Notice kind="warn">
          The root password, shown once (user <code>root</code>):
          <Copyable text={rootPassword} label="root password" />
          <button type="button" class="small" onClick={() => setRootPassword(null)}>I have saved it</button>
        </Notice>
      ) : null}
      {adding && d ? <AddUser instance={instance} databases={d.databases} onClose={() => setAdding(false)} onDone={data.reload} /> : null}
      {editing && d && d.users.some((u) => u.name === editing) ? <EditUser instance={instance} user={d.users.find((u) => u.name === editing)!} databases={d.databases} onClose={() => setEditing(null)} onDone={data.reload} /> : null}
      {deleting ? <ConfirmDelete what="user" name={deleting} onClose={() => setDeleting(null)} onConfirm={async () => { await api.request('DELETE', `/instances/${enc(instance.id)}/users/${enc(deleting)}`); data.reload(); }} /> : null}
    </section>
  );
}

function AddUser({ instance, databases, onClose, onDone }: { instance: Instance; databases: string[]; onClose: () => void; onDone: () => void }): JSX.Element {
  const api = useApi();
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [dbs, setDbs] = useState<string[]>([]);
  const [admin, setAdmin] = useState(false);
  const [run, busy, error] = useAction();
  return (
    <Dialog title="Add user" onClose={onClose}>
      <form onSubmit={(e) => {
        e.preventDefault();
        void run(() => api.request('POST', `/instances/${enc(instance.id)}/users`, { users: [{ name, password, databases: dbs.map((x) => ({ name: x, ...(admin ? { role: 'admin' } : {}) })) }] })).then((ok) => { if (ok) { onDone(); onClose(); } });
      }}>
        <label>Name<input name="user-name" value={name} onInput={(e) => setName(e.currentTarget.value)} required autoFocus /></label>
        <label>Password<input name="user-password" type="password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} required autoComplete="new-password" /></label>
        <fieldset>
          <legend>Databases</legend>
          {databases.map((x) => <label class="inline" key={x}><input type="checkbox" checked={dbs.includes(x)} onChange={(e) => setDbs(e.currentTarget.checked ? [...dbs, x] : dbs.filter((y) => y !== x))} /> {x}</label>)}
          <label class="inline"><input type="checkbox" checked={admin} onChange={(e) => setAdmin(e.currentTarget.checked)} /> as admin (may write design documents)</label>
        </fieldset>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons"><button type="button" onClick={onClose}>Cancel</button><button type="submit" class="primary" disabled={busy}>Add user</button></div>
      </form>
    </Dialog>
  );
}

function EditUser({ instance, user, databases, onClose, onDone }: { instance: Instance; user: UserView; databases: string[]; onClose: () => void; onDone: () => void }): JSX.Element {
  const api = useApi();
  const [password, setPassword] = useState('');
  const [grantDb, setGrantDb] = useState(databases.find((d) => !user.databases.some((x) => x.name === d)) ?? '');
  const [role, setRole] = useState('member');
  const [run, busy, error] = useAction();
  const [msg, setMsg] = useState<string | null>(null);
  const base = `/instances/${enc(instance.id)}/users/${enc(user.name)}`;
  const act = (what: string, f: () => Promise<unknown>): void => void run(f).then((ok) => { if (ok) { setMsg(what); onDone(); } });
  return (
    <Dialog title={`User ${user.name}`} onClose={onClose}>
      <h3>Access</h3>
      <ul class="rows">
        {user.databases.map((d) => (
          <li key={d.name}><span class="mono">{d.name}</span> <span class="muted">{d.role}</span>
            <button type="button" class="small danger-outline" disabled={busy} onClick={() => act(`Revoked ${d.name}.`, () => api.request('DELETE', `${base}/databases/${enc(d.name)}`))}>Revoke</button></li>
        ))}
      </ul>
      <form class="inline-form" onSubmit={(e) => { e.preventDefault(); act(`Granted ${grantDb} (${role}).`, () => api.request('PUT', `${base}/databases`, { databases: [{ name: grantDb }], role })); }}>
        <label>Database<select value={grantDb} onChange={(e) => setGrantDb(e.currentTarget.value)} required>{databases.map((d) => <option key={d} value={d}>{d}</option>)}</select></label>
        <label>Role<select value={role} onChange={(e) => setRole(e.currentTarget.value)}><option value="member">member</option><option value="admin">admin</option></select></label>
        <button type="submit" disabled={busy || !grantDb}>Grant</button>
      </form>
      <h3>Password</h3>
      <form class="inline-form" onSubmit={(e) => { e.preventDefault(); act('Password changed.', () => api.request('PUT', base, { user: { password } })); setPassword(''); }}>
        <label>New password<input type="password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} required autoComplete="new-password" /></label>
        <button type="submit" disabled={busy}>Change password</button>
      </form>
      {error ? <Notice kind="error">{error}</Notice> : null}
      {msg ? <Notice kind="ok">{msg}</Notice> : null}
      <div class="buttons"><button type="button" onClick={onClose}>Close</button></div>
    </Dialog>
  );
}
