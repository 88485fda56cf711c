// The console's shell: sign-in, the header and a hash router (#/instances, #/instances/ID, #/backups, ...),
// so the server serves one page and every link stays on /console/.
import type { JSX } from 'preact';
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { Api, ApiError, loadSession, saveSession, type Session } from './api.js';
import { ApiContext, Notice } from './ui.js';
import { InstanceList } from './instances.js';
import { CreateInstance } from './create.js';
import { InstancePage } from './instance.js';
import { BackupList } from './backups.js';

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/instances');
  useEffect(() => {
    const on = (): void => setHash(location.hash || '#/instances');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

/** A token is checked by listing the project's instances: the API answers 401 or 403 otherwise. */
async function check(s: Session): Promise<void> {
  await new Api(s).request('GET', '/instances?limit=1');
}

function SignIn({ onSession }: { onSession: (s: Session) => void }): JSX.Element {
  const [project, setProject] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const attempt = async (s: Session): Promise<void> => {
    setBusy(true);
    setError(undefined);
    try {
      await check(s);
      onSession(s);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? 'That token is not valid for this server.' : (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin" data-ready="true">
      <h1><span class="logo" aria-hidden="true">◆</span> couchtrove</h1>
      <p class="muted">Apache CouchDB instances, backups and restore points.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void attempt({ project: project.trim(), token, local: false });
        }}
      >
        <label>
          Project
          <input name="project" value={project} onInput={(e) => setProject(e.currentTarget.value)} required autoComplete="username" />
        </label>
        <label>
          Token
          <input name="token" type="password" value={token} onInput={(e) => setToken(e.currentTarget.value)} required autoComplete="current-password" />
        </label>
        {error ? <Notice kind="error">{error}</Notice> : null}
        <button type="submit" class="primary" disabled={busy}>Sign in</button>
      </form>
      <div class="or">
        <button type="button" disabled={busy} onClick={() => void attempt({ project: 'local', token: 'notused', local: true })}>
          Open project “local” (local mode, no token)
        </button>
        <p class="muted small">Local mode is a server started without project tokens; it listens on loopback only.</p>
      </div>
    </main>
  );
}

function route(hash: string): JSX.Element {
  const [where, query] = hash.replace(/^#\/?/, '').split('?');
  const parts = (where ?? '').split('/').map(decodeURIComponent);
  if (parts[0] === 'instances' && parts[1] === 'new') return <CreateInstance query={new URLSearchParams(query ?? '')} />;
  if (parts[0] === 'instances' && parts[1]) return <InstancePage id={parts[1]} tab={parts[2] ?? 'overview'} />;
  if (parts[0] === 'backups') return <BackupList />;
  return <InstanceList />;
}

function App(): JSX.Element {
  const [session, setSession] = useState<Session | null>(loadSession());
  const hash = useHash();
  const api = useMemo(() => (session ? new Api(session) : null), [session]);
  if (!session || !api) {
    return (
      <SignIn
        onSession={(s) => {
          saveSession(s);
          setSession(s);
          location.hash = '#/instances';
        }}
      />
    );
  }
  const section = hash.startsWith('#/backups') ? 'backups' : 'instances';
  return (
    <ApiContext.Provider value={api}>
      <header class="top">
        <a class="brand" href="#/instances"><span class="logo" aria-hidden="true">◆</span> couchtrove</a>
        <nav aria-label="Sections">
          <a href="#/instances" aria-current={section === 'instances' ? 'page' : undefined}>Instances</a>
          <a href="#/backups" aria-current={section === 'backups' ? 'page' : undefined}>Backups</a>
        </nav>
        <span class="who">
          {session.local ? <span class="badge warn" title="local mode: no token">local mode</span> : null}
          <span>project <strong>{session.project}</strong></span>
          <button
            type="button"
            onClick={() => {
              saveSession(null);
              setSession(null);
            }}
          >
            Sign out
          </button>
        </span>
      </header>
      {/* A new key per project: nothing of one project's pages survives into another's. */}
      <div key={session.project}>{route(hash)}</div>
    </ApiContext.Provider>
  );
}

const root = document.getElementById('app')!;
root.textContent = ''; // the boot line is not Preact's to diff
render(<App />, root);
