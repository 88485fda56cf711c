// Restore points: an archived instance's restorable window on a timeline with its base backups (the base
// cuts), its incremental cuts and its backups on it; pick a moment (slider, or typed), see the nearest restore
// point at or before it, then restore the whole instance (a new one) or one database to it.
import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { bytes, parseTime, when, type Backup, type Cut, type Instance } from './api.js';
import { RestoreDatabase } from './access.js';
import { Notice, navigate, useAction, useApi, usePoll } from './ui.js';

/** A marker at a fraction of the timeline, placed through CSSOM (the CSP allows no style attribute). */
function Mark({ at, kind, label }: { at: number; kind: string; label: string }): JSX.Element {
  const ref = useRef<HTMLSpanElement>(null);
  useEffect(() => {
    if (ref.current) ref.current.style.left = `${Math.min(100, Math.max(0, at * 100))}%`;
  }, [at]);
  return <span ref={ref} class={`mark ${kind}`} title={label} aria-label={label} />;
}

const iso = (ms: number): string => new Date(ms).toISOString();
/** Cuts drawn on the timeline: the newest this many of the window (the API pages; a long archive is not read whole). */
const CUTS_SHOWN = 500;

interface CutPage {
  cuts: Cut[];
  more: boolean;
  /** The window's end they were read up to (ms). */
  upTo: number;
}

/**
 * The nearest restore point at or before `at`: from the cuts loaded when they reach back that far, else
 * asked of the API (the newest cut whose restore point is at or before it), as the server chooses it.
 */
function useNearest(instanceId: string, cuts: CutPage | undefined, at: number): { cut: Cut | null; loading: boolean } {
  const api = useApi();
  // The cuts loaded answer for a moment they cover: up to the window's end when they were read (a newer cut
  // may exist after it), and back to their oldest unless none is older.
  const covered = !!cuts && at <= cuts.upTo;
  const local = covered ? cuts.cuts.find((c) => parseTime(c.restore_point) <= at) : undefined;
  const known = covered && (local !== undefined || !cuts.more);
  const [asked, setAsked] = useState<{ at: number; cut: Cut | null } | null>(null);
  useEffect(() => {
    if (known || Number.isNaN(at)) return;
    let stop = false;
    // Debounced: a slider dragged through a long window asks once it rests.
    const t = setTimeout(() => {
      void api.cuts(instanceId, { to: iso(at), sort: 'desc', limit: 1 }).then((r) => !stop && setAsked({ at, cut: r.cuts[0] ?? null }), () => undefined);
    }, 250);
    return () => {
      stop = true;
      clearTimeout(t);
    };
  }, [known, at, instanceId]);
  if (known) return { cut: local ?? null, loading: false };
  return asked?.at === at ? { cut: asked.cut, loading: false } : { cut: null, loading: true };
}

export function RestorePoints({ instance, backups, onChange }: { instance: Instance; backups: Backup[]; onChange: () => void }): JSX.Element {
  const api = useApi();
  const a = instance.archive;
  const dbs = usePoll(() => api.databases(instance.id), 0, [instance.id]);
  // The window's cuts, newest first, again every few intervals (a new cut only when something changed).
  const cuts = usePoll(
    async (): Promise<CutPage> => {
      const w = instance.archive?.window;
      if (!w?.to) return { cuts: [], more: false, upTo: -Infinity };
      // Not bounded by the window's end as last seen (the listing's may be older than the newest cut).
      return { ...(await api.cuts(instance.id, { from: w.from, sort: 'desc', limit: CUTS_SHOWN })), upTo: parseTime(w.to) };
    },
    Math.max(5000, (a?.interval ?? 5) * 3000), [instance.id, a?.window.to === null || a?.window.to === undefined],
  );
  const [interval, setIntervalSeconds] = useState('60');
  const [run, busy, error] = useAction();
  // To the millisecond: a moment rounded down to its second could fall before the oldest restore point.
  // The oldest cut is known after the agent's first retention pass; until then the window starts at the newest.
  const to = parseTime(a?.window.to);
  const from = Number.isNaN(parseTime(a?.window.from)) ? to : parseTime(a?.window.from);
  const [picked, setPicked] = useState<number | null>(null);
  const [typed, setTyped] = useState('');
  const [db, setDb] = useState('');
  const [restoringDb, setRestoringDb] = useState<string | null>(null);
  const archive = (enabled: boolean): void => {
    void run(() => api.action(instance.id, { archive: enabled ? { enabled, interval: Number(interval) } : { enabled } })).then(onChange);
  };
  const hasWindow = !Number.isNaN(from) && !Number.isNaN(to);
  const span = hasWindow ? Math.max(1, to - from) : 1;
  const at = picked ?? (hasWindow ? to : null);
  const chosen = typed || (at !== null ? iso(at) : '');
  const chosenMs = parseTime(chosen);
  const inWindow = hasWindow && !Number.isNaN(chosenMs) && chosenMs >= from && chosenMs <= to;
  const anchor = backups.find((b) => b.status === 'COMPLETED' && b.instance_id === instance.id);
  const nearest = useNearest(instance.id, cuts.data, chosenMs);
  if (!a?.enabled && !a?.restore_point) {
    return (
      <section data-ready={dbs.data ? 'true' : 'false'} aria-label="Restore points">
        <p>Archiving is off. With it on, the agent cuts the instance’s changed files every interval into its archive, and any moment of the window kept can be restored: the whole instance, or one database.</p>
        <form class="inline-form" onSubmit={(e) => { e.preventDefault(); archive(true); }}>
          <label>Interval (s)<input name="interval" type="number" min={1} max={3600} value={interval} onInput={(e) => setIntervalSeconds(e.currentTarget.value)} /></label>
          <button type="submit" class="primary" disabled={busy || instance.status !== 'ACTIVE'}>Turn archiving on</button>
        </form>
        {error ? <Notice kind="error">{error}</Notice> : null}
      </section>
    );
  }
  const cutsOnAxis = (cuts.data?.cuts ?? []).filter((c) => !c.error);
  const onAxis = backups.filter((b) => b.instance_id === instance.id && b.status === 'COMPLETED').map((b) => ({ b, t: parseTime(b.created) })).filter((x) => hasWindow && x.t >= from && x.t <= to);
  return (
    <section data-ready={dbs.data && cuts.data ? 'true' : 'false'} aria-label="Restore points">
      <div class="facts">
        <div><span class="k">Archiving</span><span>{a.enabled ? `on, every ${a.interval} s, ${a.keep_days} days kept` : 'off (the archive stays)'}</span></div>
        <div><span class="k">Newest restore point</span><span data-testid="restore-point">{when(a.restore_point)}</span></div>
        <div><span class="k">Lag</span><span class={a.behind ? 'bad-text' : ''} data-testid="archive-lag">{a.lag_seconds === null ? '—' : `${a.lag_seconds} s${a.behind ? ' (behind)' : ''}`}</span></div>
        <div><span class="k">Cuts in the window</span><span data-testid="cut-count">{cuts.data ? `${cutsOnAxis.filter((c) => c.base).length} base, ${cutsOnAxis.filter((c) => !c.base).length} incremental${cuts.data.more ? ` (the newest ${CUTS_SHOWN} shown)` : ''}` : '…'}</span></div>
        <div><span class="k">Cuts since the agent started</span><span>{`${a.cuts.base} base, ${a.cuts.incremental} incremental, ${a.cuts.unchanged} unchanged, ${a.cuts.failed} failed`}</span></div>
      </div>
      {a.error ? <Notice kind="error">{`Archiving fails since ${when(a.failing_since)}: ${a.error}`}</Notice> : null}
      {hasWindow ? (
        <div class="timeline" aria-label="Restorable window">
          <div class="axis">
            {cutsOnAxis.map((c) => <Mark key={c.id} at={(parseTime(c.restore_point) - from) / span} kind={c.base ? 'cut base' : 'cut'} label={`${c.base ? 'base' : 'incremental'} cut, restore point ${when(c.restore_point)}, ${bytes(c.size_bytes)} stored`} />)}
            {onAxis.map(({ b, t }) => <Mark key={b.id} at={(t - from) / span} kind="backup" label={`backup ${b.name}, ${when(b.created)}`} />)}
            {at !== null ? <Mark at={(Math.min(to, Math.max(from, chosenMs || at)) - from) / span} kind="picked" label={`picked ${chosen}`} /> : null}
          </div>
          <input
            type="range" class="slider" min={from} max={to} step={1000} value={inWindow ? chosenMs : at ?? to} aria-label="Pick a moment in the restorable window"
            onInput={(e) => { setPicked(Number(e.currentTarget.value)); setTyped(''); }}
          />
          <div class="ends small muted"><span>{when(a.window.from ?? a.window.to)} (oldest)</span><span>{when(a.window.to)} (newest)</span></div>
          <div class="legend small muted" aria-hidden="true"><span class="key base" /> base (a full copy) <span class="key cut" /> incremental cut <span class="key backup" /> backup <span class="key picked" /> picked</div>
        </div>
      ) : <p class="muted">No restore point yet: the first cut comes within one interval.</p>}
      <form class="inline-form" onSubmit={(e) => e.preventDefault()}>
        <label>Moment (ISO 8601, UTC)<input name="restore-time" value={chosen} onInput={(e) => setTyped(e.currentTarget.value)} /></label>
      </form>
      {chosen && !Number.isNaN(chosenMs) ? (
        inWindow ? (
          <p data-testid="nearest">
            {nearest.cut ? <>Nearest restore point at or before <strong>{chosen}</strong>: <strong data-cut={nearest.cut.id}>{when(nearest.cut.restore_point)}</strong>{' '}
              ({nearest.cut.base ? 'base cut' : `incremental cut on base ${nearest.cut.base_cut}`} <span class="mono">{nearest.cut.id}</span>); nothing written after it is in the restore.</>
              : nearest.loading ? 'Finding the nearest restore point…' : `No cut at or before ${chosen}.`}
          </p>
        )
          : <Notice kind="warn">That moment is outside the restorable window.</Notice>
      ) : null}
      <div class="buttons left">
        <button
          type="button" class="primary" disabled={!inWindow || !anchor}
          title={anchor ? '' : 'A completed backup of this instance is needed to name its archive'}
          onClick={() => anchor && navigate(`#/instances/new?backup=${encodeURIComponent(anchor.id)}&restore_time=${encodeURIComponent(chosen)}`)}
        >
          Restore whole instance to this moment…
        </button>
        <label class="inline">
          Database
          <select value={db} onChange={(e) => setDb(e.currentTarget.value)} aria-label="Database to restore">
            <option value="">choose…</option>
            {(dbs.data ?? []).map((d) => <option key={d} value={d}>{d}</option>)}
          </select>
        </label>
        <button type="button" disabled={!inWindow || !db || instance.status !== 'ACTIVE'} onClick={() => setRestoringDb(db)}>Restore this database to this moment…</button>
      </div>
      {!anchor ? <p class="small muted">Restoring the whole instance names its archive through one of its completed backups: take one first.</p> : null}
      <div class="buttons left">
        {a.enabled ? <button type="button" class="danger-outline" disabled={busy} onClick={() => archive(false)}>Turn archiving off</button> : <button type="button" disabled={busy} onClick={() => archive(true)}>Turn archiving on again</button>}
      </div>
      {error ? <Notice kind="error">{error}</Notice> : null}
      {restoringDb ? <RestoreDatabase instance={instance} database={restoringDb} backups={backups} time={chosen} onClose={() => setRestoringDb(null)} onDone={dbs.reload} /> : null}
    </section>
  );
}
