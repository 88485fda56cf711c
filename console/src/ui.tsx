// Shared pieces: polling, status badges, progress with rate and ETA, confirmations, notices.
import type { ComponentChildren, JSX } from 'preact';
import { createContext } from 'preact';
import { useCallback, useContext, useEffect, useRef, useState } from 'preact/hooks';
import { Api, bytes, type Progress } from './api.js';

export const ApiContext = createContext<Api | null>(null);

export function useApi(): Api {
  const api = useContext(ApiContext);
  if (!api) throw new Error('no session');
  return api;
}

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  reload: () => void;
}

/**
 * Loads now and again every `ms` (0: once), keeping the last data while a reload runs; a failed reload
 * shows its error beside the last data rather than blanking the page.
 */
export function usePoll<T>(load: () => Promise<T>, ms: number, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async (): Promise<void> => {
      try {
        const d = await loadRef.current();
        if (stop) return;
        setData(d);
        setError(undefined);
      } catch (err) {
        if (stop) return;
        setError((err as Error).message);
      }
      if (!stop && ms > 0) timer = setTimeout(() => void run(), ms);
    };
    void run();
    return () => {
      stop = true;
      if (timer) clearTimeout(timer);
    };
  }, [...deps, tick, ms]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, reload };
}

const TONE: Record<string, string> = {
  ACTIVE: 'ok', COMPLETED: 'ok', running: 'ok',
  BUILD: 'busy', BACKUP: 'busy', RESIZE: 'busy', REBOOT: 'busy', NEW: 'busy', SAVING: 'busy', BUILDING: 'busy', RESTART_REQUIRED: 'warn', PROMOTE: 'busy', EJECT: 'busy', DETACH: 'busy', UPGRADE: 'busy', starting: 'busy', DELETING: 'busy',
  ERROR: 'bad', FAILED: 'bad', DELETE_FAILED: 'bad', SHUTDOWN: 'bad', error: 'bad', unknown: 'warn',
};

export function Status({ value }: { value: string }): JSX.Element {
  return <span class={`badge ${TONE[value] ?? 'neutral'}`}>{value}</span>;
}

/** A bar with a label; the width is set through CSSOM (allowed by the CSP), never a style attribute. */
export function Bar({ value, max, label, tone }: { value: number; max: number; label: string; tone?: string }): JSX.Element {
  const ref = useRef<HTMLSpanElement>(null);
  const pct = max > 0 ? Math.min(100, Math.max(0, (100 * value) / max)) : 0;
  useEffect(() => {
    if (ref.current) ref.current.style.width = `${pct}%`;
  }, [pct]);
  return (
    <span class={`bar ${tone ?? (pct >= 85 ? 'bad' : '')}`} role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(pct)} aria-label={label} title={label}>
      <span class="fill" ref={ref} />
    </span>
  );
}

interface Sample {
  t: number;
  done: number;
}

/**
 * The API's bytes done and total as a bar with rate and ETA once two samples exist (as the CLI's --wait:
 * the bar never moves back within one operation).
 */
export function LiveProgress({ progress, state, step }: { progress: Progress | undefined; state: string; step?: string | undefined }): JSX.Element {
  const samples = useRef<Sample[]>([]);
  const [, force] = useState(0);
  const done = progress?.bytes_done ?? 0;
  const total = progress?.bytes_total ?? 0;
  useEffect(() => {
    if (!progress) return;
    const s = samples.current;
    const last = s[s.length - 1];
    if (!last || last.done !== done) s.push({ t: Date.now(), done });
    if (s.length > 10) s.shift();
    force((n) => n + 1);
  }, [done, progress]);
  const s = samples.current;
  let rate: number | undefined;
  if (s.length >= 2) {
    const a = s[0]!;
    const b = s[s.length - 1]!;
    if (b.t > a.t && b.done > a.done) rate = ((b.done - a.done) * 1000) / (b.t - a.t);
  }
  const eta = rate && total > done ? Math.ceil((total - done) / rate) : undefined;
  return (
    <div class="progress" data-testid="progress" aria-live="polite">
      <div class="progress-head">
        <Status value={state} />
        {step ? <span class="step">{step}</span> : null}
        {progress ? <span class="muted">{`${bytes(done)} of ${bytes(total)} (${progress.percent}%)`}</span> : null}
        {rate ? <span class="muted">{`${bytes(rate)}/s`}</span> : null}
        {eta !== undefined ? <span class="muted">{`ETA ${eta} s`}</span> : null}
      </div>
      {progress ? <Bar value={done} max={total} label={`${progress.percent}% done`} tone="busy" /> : <span class="bar busy indeterminate"><span class="fill" /></span>}
    </div>
  );
}

export function Notice({ kind, children }: { kind: 'error' | 'info' | 'warn' | 'ok'; children: ComponentChildren }): JSX.Element {
  return <div class={`notice ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>{children}</div>;
}

/** A modal dialog (the native <dialog>: focus trapped, Escape closes it). */
export function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: ComponentChildren }): JSX.Element {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog ref={ref} onClose={onClose} aria-label={title}>
      <h2>{title}</h2>
      {children}
    </dialog>
  );
}

/**
 * Runs one API call from a button: shows it busy, then its error as the API gave it. Returns [run, busy,
 * error]; run resolves true on success.
 */
export function useAction(): [(f: () => Promise<unknown>) => Promise<boolean>, boolean, string | undefined, () => void] {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const run = useCallback(async (f: () => Promise<unknown>): Promise<boolean> => {
    setBusy(true);
    setError(undefined);
    try {
      await f();
      return true;
    } catch (err) {
      setError((err as Error).message);
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return [run, busy, error, () => setError(undefined)];
}

/** Delete with a confirmation that names what goes: the name must be typed. */
export function ConfirmDelete({ what, name, onConfirm, onClose, note }: { what: string; name: string; onConfirm: () => Promise<unknown>; onClose: () => void; note?: string }): JSX.Element {
  const [typed, setTyped] = useState('');
  const [run, busy, error] = useAction();
  return (
    <Dialog title={`Delete ${what} ${name}?`} onClose={onClose}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          void run(onConfirm).then((ok) => ok && onClose());
        }}
      >
        <p>This cannot be undone.{note ? ` ${note}` : ''} Type <strong>{name}</strong> to confirm.</p>
        <label>
          Name
          <input value={typed} onInput={(e) => setTyped(e.currentTarget.value)} autoFocus aria-label={`Type ${name} to confirm`} />
        </label>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <div class="buttons">
          <button type="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="danger" disabled={typed !== name || busy}>{busy ? 'Deleting…' : `Delete ${what}`}</button>
        </div>
      </form>
    </Dialog>
  );
}

export function Copyable({ text, label }: { text: string; label: string }): JSX.Element {
  const [copied, setCopied] = useState(false);
  return (
    <div class="copyable">
      <code>{text}</code>
      <button
        type="button"
        aria-label={`Copy ${label}`}
        onClick={() => {
          void navigator.clipboard?.writeText(text).then(() => {
            setCopied(true);
            setTimeout(() => setCopied(false), 1500);
          }, () => undefined);
        }}
      >
        {copied ? 'Copied' : 'Copy'}
      </button>
    </div>
  );
}

export function navigate(hash: string): void {
  location.hash = hash;
}
