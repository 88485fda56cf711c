// Backups, per instance and for the project: state with live progress, sizes, parent chain; create full
// or incremental; verify (read back whole by the server, its state live); restore into a new instance; delete
// (the API refuses it clearly when a kept backup depends on it).
import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import { FINAL_BACKUP, bytes, when, type Backup, type Instance } from './api.js';
import { ConfirmDelete, Dialog, LiveProgress, Notice, Status, useAction, useApi, usePoll } from './ui.js';

/** The verify state as the API records it: never, running, ok (when), or failed with what was found. */
function Verified({ b }: { b: Backup }): JSX.Element | null {
  const r = b.verify_result;
  if (!r) return null;
  if (r === 'running') return <div class="small" data-testid="verify"><span class="badge busy">verifying…</span></div>;
  if (r === 'ok') return <div class="small" data-testid="verify"><span class="badge ok" title={`verified ${when(b.verified_at)}`}>verified</span> <span class="muted">{when(b.verified_at)}</span></div>;
  return <div class="small bad-text" data-testid="verify"><span class="badge bad">verify failed</span> {r.replace(/^failed: /, '')}</div>;
}

export function BackupTable({ backups, instances, onChange, showInstance }: { backups: Backup[]; instances: Instance[]; onChange: () => void; showInstance: boolean }): JSX.Element {
  const api = useApi();
  const [deleting, setDeleting] = useState<Backup | null>(null);
  const [run, busy, error] = useAction();
  const byId = new Map(backups.map((b) => [b.id, b]));
  const instName = (id: string): string => instances.find((i) => i.id === id)?.name ?? `${id.slice(0, 8)} (deleted)`;
  if (backups.length === 0) return <p class="muted">No backups yet.</p>;
  return (
    <div class="table-wrap">
      <table class="list" aria-label="Backups">
        <thead>
          <tr><th>Name</th>{showInstance ? <th>Instance</th> : null}<th>State</th><th>Kind / parent</th><th>Size</th><th>Created</th><th><span class="sr-only">Actions</span></th></tr>
        </thead>
        <tbody>
          {backups.map((b) => {
            // The whole chain a restore of it reads, newest first, to its full backup.
            const chain: string[] = [];
            for (let p = b.parent_id, n = 0; p && n < 50; n++) {
              const x = byId.get(p);
              chain.push(x ? x.name : p.slice(0, 8));
              p = x?.parent_id ?? null;
            }
            return (
              <tr key={b.id} data-backup={b.name}>
                <td><span class="strong">{b.name}</span><div class="small muted mono">{b.id.slice(0, 8)}</div>{b.description ? <div class="small muted">{b.description}</div> : null}</td>
                {showInstance ? <td><a href={`#/instances/${b.instance_id}`}>{instName(b.instance_id)}</a></td> : null}
                <td class="state-cell">
                  {FINAL_BACKUP.has(b.status) ? <Status value={b.status} /> : <LiveProgress progress={b.progress} state={b.status} />}
                  {b.fail_reason ? <div class="small bad-text">{b.fail_reason}</div> : null}
                  <Verified b={b} />
                </td>
                <td>{b.parent_id ? <span title={`restoring it reads ${[b.name, ...chain].join(' ← ')}`}>incremental of {chain.join(' ← ')}</span> : 'full'}</td>
                <td>{bytes(b.size_bytes)} stored{b.data_bytes ? <div class="small muted">of {bytes(b.data_bytes)} data</div> : null}</td>
                <td title={b.created}>{when(b.created)}</td>
                <td class="actions">
                  {b.status === 'COMPLETED' ? (
                    <button type="button" class="small" disabled={busy || b.verify_result === 'running'} title="The server reads the backup back whole: every object, record and checksum, with the keys a restore uses"
                      onClick={() => void run(() => api.request('POST', `/backups/${encodeURIComponent(b.id)}/verify`)).then(onChange)}>Verify</button>
                  ) : null}
                  {b.status === 'COMPLETED' ? <a class="button small" href={`#/instances/new?backup=${encodeURIComponent(b.id)}`}>Restore into new instance</a> : null}
                  <button type="button" class="small danger-outline" onClick={() => setDeleting(b)} disabled={!FINAL_BACKUP.has(b.status)}>Delete</button>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {error ? <Notice kind="error">{error}</Notice> : null}
      {deleting ? (
        <ConfirmDelete
          what="backup"
          name={deleting.name}
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            await api.request('DELETE', `/backups/${encodeURIComponent(deleting.id)}`);
            onChange();
          }}
        />
      ) : null}
    </div>
  );
}

export function CreateBackup({ instance, backups, onDone, onClose }: { instance: Instance; backups: Backup[]; onDone: () => void; onClose: () => void }): JSX.Element {
  const api = useApi();
  const [name, setName] = useState(`${instance.name}-${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, '')}`);
  const [incremental, setIncremental] = useState(false);
  const [description, setDescription] = useState('');
  const [run, busy, error] = useAction();
  const hasParent = backups.some((b) => b.status === 'COMPLETED' && b.instance_id === instance.id);
  return (
    <Dialog title={`Back up ${instance.name}`} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run(() => api.request('POST', '/backups', { backup: { name, instance: instance.id, incremental: incremental ? 1 : 0, ...(description ? { description } : {}) } })).then((ok) => {
            if (ok) {
              onDone();
              onClose();
            }
          });
        }}
      >
        <label>Name<input name="backup-name" value={name} onInput={(e) => setName(e.currentTarget.value)} required autoFocus /></label>
        <label>Description<input name="backup-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} /></label>
        <fieldset>
          <legend>Kind</legend>
          <label class="inline"><input type="radio" name="kind" checked={!incremental} onChange={() => setIncremental(false)} /> full</label>
          <label class="inline"><input type="radio" name="kind" checked={incremental} onChange={() => setIncremental(true)} disabled={!hasParent} /> incremental (on the latest backup)</label>
        </fieldset>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons">
          <button type="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="primary" disabled={busy}>{busy ? 'Starting…' : 'Start backup'}</button>
        </div>
      </form>
    </Dialog>
  );
}

export function BackupList(): JSX.Element {
  const api = useApi();
  const [busy, setBusy] = useState(false);
  const data = usePoll(async () => {
    const [backups, instances] = await Promise.all([api.backups(), api.instancesBrief()]);
    setBusy(backups.some((b) => !FINAL_BACKUP.has(b.status) || b.verify_result === 'running'));
    return { backups, instances };
  }, busy ? 1000 : 3000, []);
  return (
    <main data-ready={data.data ? 'true' : undefined}>
      <h1>Backups</h1>
      <p class="muted">Every backup of the project, newest first. Create one from its instance’s page.</p>
      {data.error ? <Notice kind="error">{data.error}</Notice> : null}
      {data.data ? <BackupTable backups={data.data.backups} instances={data.data.instances} onChange={data.reload} showInstance={true} /> : <p class="muted">Loading…</p>}
    </main>
  );
}
