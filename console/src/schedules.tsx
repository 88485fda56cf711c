// An instance's backup schedules with their retention (the API of src/api/schedules.ts, which the CLI's
// `couchtrove schedule ...` uses too): create, show, pause/resume, delete.
import type { JSX } from 'preact';
import { useState } from 'preact/hooks';
import { ago, when, type Instance, type Schedule } from './api.js';
import { ConfirmDelete, Dialog, Notice, useAction, useApi, type Loaded } from './ui.js';

const enc = encodeURIComponent;

export function retention(s: Pick<Schedule, 'keep_last' | 'keep_daily' | 'keep_weekly'>): string {
  const parts = [
    ...(s.keep_last !== null ? [`last ${s.keep_last}`] : []),
    ...(s.keep_daily !== null ? [`${s.keep_daily} daily`] : []),
    ...(s.keep_weekly !== null ? [`${s.keep_weekly} weekly`] : []),
  ];
  return parts.length ? `keeps ${parts.join(', ')}` : 'keeps every backup';
}

export function Schedules({ instance, list }: { instance: Instance; list: Loaded<Schedule[]> }): JSX.Element {
  const api = useApi();
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState<Schedule | null>(null);
  const [run, busy, error] = useAction();
  const base = `/instances/${enc(instance.id)}/schedules`;
  const pause = (s: Schedule, paused: boolean): void => void run(() => api.request('PATCH', `${base}/${enc(s.id)}`, { schedule: { paused } })).then(list.reload);
  const rows = list.data;
  return (
    <section aria-label="Schedules" data-ready={rows ? 'true' : 'false'}>
      <div class="title-row">
        <h2>Schedules</h2>
        <button type="button" onClick={() => setCreating(true)}>New schedule…</button>
      </div>
      {list.error ? <Notice kind="error">{list.error}</Notice> : null}
      {error ? <Notice kind="error">{error}</Notice> : null}
      {!rows ? <p class="muted">Loading…</p> : rows.length === 0 ? <p class="muted">No schedule: backups are taken only when asked.</p> : (
        <div class="table-wrap">
          <table class="list" aria-label="Schedules">
            <thead><tr><th>Name</th><th>When (UTC)</th><th>Kind</th><th>Retention</th><th>Next run</th><th>Last run</th><th><span class="sr-only">Actions</span></th></tr></thead>
            <tbody>
              {rows.map((s) => (
                <tr key={s.id} data-schedule={s.name}>
                  <td><span class="strong">{s.name}</span>{s.description ? <div class="small muted">{s.description}</div> : null}</td>
                  <td class="mono">{s.pattern}</td>
                  <td>{s.incremental ? 'incremental' : 'full'}{s.verify ? ', verified' : ''}</td>
                  <td>{retention(s)}</td>
                  <td>{s.paused ? <span class="badge warn">paused</span> : <span title={s.next_run ?? ''}>{when(s.next_run)}</span>}</td>
                  <td>{s.last_run ? <span title={s.last_run}>{ago(s.last_run)}</span> : <span class="muted">never</span>}{s.last_result ? <div class={`small ${/fail/i.test(s.last_result) ? 'bad-text' : 'muted'}`}>{s.last_result}</div> : null}</td>
                  <td class="actions">
                    {s.paused
                      ? <button type="button" class="small" disabled={busy} onClick={() => pause(s, false)}>Resume</button>
                      : <button type="button" class="small" disabled={busy} onClick={() => pause(s, true)}>Pause</button>}
                    <button type="button" class="small danger-outline" onClick={() => setDeleting(s)}>Delete</button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating ? <CreateSchedule instance={instance} onDone={list.reload} onClose={() => setCreating(false)} /> : null}
      {deleting ? (
        <ConfirmDelete what="schedule" name={deleting.name} onClose={() => setDeleting(null)} note="Its backups stay."
          onConfirm={async () => {
            await api.request('DELETE', `${base}/${enc(deleting.id)}`);
            list.reload();
          }}
        />
      ) : null}
    </section>
  );
}

/** A number field's value for the API: empty is "not set" (null). */
const keep = (x: string): number | null => (x.trim() === '' ? null : Number(x));

function CreateSchedule({ instance, onDone, onClose }: { instance: Instance; onDone: () => void; onClose: () => void }): JSX.Element {
  const api = useApi();
  const [name, setName] = useState('nightly');
  const [pattern, setPattern] = useState('0 3 * * *');
  const [incremental, setIncremental] = useState(false);
  const [verify, setVerify] = useState(false);
  const [last, setLast] = useState('7');
  const [daily, setDaily] = useState('');
  const [weekly, setWeekly] = useState('');
  const [run, busy, error] = useAction();
  return (
    <Dialog title={`New backup schedule for ${instance.name}`} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const schedule = { name, pattern, incremental: incremental ? 1 : 0, verify: verify ? 1 : 0, keep_last: keep(last), keep_daily: keep(daily), keep_weekly: keep(weekly) };
          void run(() => api.request('POST', `/instances/${enc(instance.id)}/schedules`, { schedule })).then((ok) => {
            if (ok) {
              onDone();
              onClose();
            }
          });
        }}
      >
        <label>Name<input name="schedule-name" value={name} onInput={(e) => setName(e.currentTarget.value)} required autoFocus /></label>
        <label>When: a 5-field cron pattern, UTC (minute hour day month weekday)<input name="schedule-pattern" class="mono" value={pattern} onInput={(e) => setPattern(e.currentTarget.value)} required /></label>
        <label class="inline"><input type="checkbox" name="schedule-incremental" checked={incremental} onChange={(e) => setIncremental(e.currentTarget.checked)} /> incremental (on the latest backup)</label>
        <label class="inline"><input type="checkbox" name="schedule-verify" checked={verify} onChange={(e) => setVerify(e.currentTarget.checked)} /> verify each backup once taken</label>
        <fieldset>
          <legend>Retention: the schedule’s backups kept (empty: no limit of that kind; a backup a kept one depends on stays)</legend>
          <div class="row">
            <label>Last<input name="keep-last" type="number" min={1} value={last} onInput={(e) => setLast(e.currentTarget.value)} /></label>
            <label>Daily<input name="keep-daily" type="number" min={1} value={daily} onInput={(e) => setDaily(e.currentTarget.value)} /></label>
            <label>Weekly<input name="keep-weekly" type="number" min={1} value={weekly} onInput={(e) => setWeekly(e.currentTarget.value)} /></label>
          </div>
        </fieldset>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons">
          <button type="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="primary" disabled={busy}>Create schedule</button>
        </div>
      </form>
    </Dialog>
  );
}
