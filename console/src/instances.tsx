// The first page: the project's health at a glance, then its instances.
import type { JSX } from 'preact';
import { useMemo } from 'preact/hooks';
import { ago, bytes, parseTime, type Instance, type Schedule } from './api.js';
import { Bar, Notice, Status, useApi, usePoll } from './ui.js';

export function engineLabel(i: Instance): string {
  if (i.engine === 'devengine') return 'development engine';
  return `Apache CouchDB ${i.datastore.version_number ?? i.datastore.version}`;
}

export function role(i: Instance, names: Map<string, string>): JSX.Element {
  if (i.replica_of) return <span>replica of <a href={`#/instances/${i.replica_of.id}`}>{names.get(i.replica_of.id) ?? i.replica_of.id.slice(0, 8)}</a></span>;
  if (i.replicas?.length) return <span>primary ({i.replicas.length} {i.replicas.length === 1 ? 'replica' : 'replicas'})</span>;
  return <span>primary</span>;
}

export function archiving(i: Instance): JSX.Element {
  const a = i.archive;
  if (!a?.enabled) return <span class="muted">off</span>;
  if (a.error || a.behind) return <span class="badge bad" title={a.error ?? ''}>behind{a.lag_seconds !== null ? ` ${a.lag_seconds} s` : ''}</span>;
  return <span class="badge ok">on{a.lag_seconds !== null ? `, ${a.lag_seconds} s lag` : ''}</span>;
}

export function Volume({ i }: { i: Instance }): JSX.Element {
  const size = i.volume.size_bytes ?? i.volume.size * 1024 ** 3;
  const used = i.volume.used_bytes;
  if (used === undefined) return <span>{i.volume.size} GB</span>;
  return (
    <span class="volume">
      <Bar value={used} max={size} label={`${bytes(used)} of ${i.volume.size} GB used`} />
      <span class="small muted">{`${bytes(used)} / ${i.volume.size} GB`}</span>
    </span>
  );
}

interface Health {
  counts: Array<[string, number]>;
  problems: Array<{ id: string; name: string; what: string }>;
}

function health(list: Instance[], schedules: Map<string, Schedule[]>, now: number): Health {
  const counts = new Map<string, number>();
  for (const i of list) counts.set(i.status, (counts.get(i.status) ?? 0) + 1);
  const problems: Health['problems'] = [];
  for (const i of list) {
    const add = (what: string): number => problems.push({ id: i.id, name: i.name, what });
    const size = i.volume.size_bytes ?? i.volume.size * 1024 ** 3;
    if (i.volume.used_bytes !== undefined && i.volume.used_bytes >= 0.85 * size) add(`volume ${Math.round((100 * i.volume.used_bytes) / size)}% full`);
    if (i.archive?.enabled && (i.archive.behind || i.archive.error)) add(`archiving behind${i.archive.error ? `: ${i.archive.error}` : ''}`);
    if (i.replication && i.replication.state !== 'running') add(`replica ${i.replication.state}${i.replication.errors[0] ? `: ${i.replication.errors[0]}` : ''}`);
    for (const s of schedules.get(i.id) ?? []) {
      // A schedule whose slot passed more than 10 minutes ago without a backup: the last one is older than it says.
      const next = parseTime(s.next_run);
      if (!Number.isNaN(next) && next < now - 600_000) add(`schedule ${s.name}: backup overdue since ${ago(s.next_run, now)}`);
      else if (typeof s.last_result === 'string' && /fail/i.test(s.last_result)) add(`schedule ${s.name}: ${s.last_result}`);
    }
    if (i.fault && i.status === 'ERROR') add(`fault: ${i.fault.message}`);
  }
  return { counts: [...counts.entries()].sort((a, b) => b[1] - a[1]), problems };
}

export function InstanceList(): JSX.Element {
  const api = useApi();
  // The brief listing shows the page at once; the detailed one (each agent asked) fills in volumes and roles.
  const brief = usePoll(() => api.instancesBrief(), 5000, []);
  const detail = usePoll(() => api.instances(), 3000, []);
  const list = { data: detail.data ?? brief.data, error: detail.error ?? brief.error };
  const flavors = usePoll(() => api.flavors(), 0, []);
  const flavorName = (id: string): string => flavors.data?.find((f) => f.id === id)?.name ?? id;
  // Schedules change rarely: every 30 s, one call per instance.
  const ids = (list.data ?? []).map((i) => i.id).join(',');
  const schedules = usePoll(async () => {
    const m = new Map<string, Schedule[]>();
    await Promise.all((list.data ?? []).map(async (i) => m.set(i.id, await api.schedules(i.id).catch(() => []))));
    return { ids, m };
  }, 30_000, [ids]);
  const names = useMemo(() => new Map((list.data ?? []).map((i) => [i.id, i.name])), [list.data]);
  const h = list.data ? health(list.data, schedules.data?.m ?? new Map(), Date.now()) : undefined;
  // The page's data: the listing, flavor names and the schedules of the instances listed (the health strip's
  // overdue backups); each agent's live facts (volume used, engine, last backup) fill in after.
  const ready = !!list.data && !!flavors.data && schedules.data?.ids === ids;
  return (
    <main data-ready={ready ? 'true' : undefined} data-detail={detail.data ? 'true' : undefined} aria-busy={!list.data}>
      <div class="title-row">
        <h1>Instances</h1>
        <a class="button primary" href="#/instances/new">Create instance</a>
      </div>
      {list.error ? <Notice kind="error">{list.error}</Notice> : null}
      {h ? (
        <section class="health" aria-label="Health at a glance">
          <div class="counts">
            <span class="count"><strong>{list.data!.length}</strong> instances</span>
            {h.counts.map(([s, n]) => <span class="count" key={s}><Status value={s} /> <strong>{n}</strong></span>)}
          </div>
          {h.problems.length === 0 ? (
            <p class="ok-line">✓ No instance needs attention: volumes under 85%, archiving and replicas following, backups on schedule.</p>
          ) : (
            <ul class="problems">
              {h.problems.map((p) => <li key={p.id + p.what}><a href={`#/instances/${p.id}`}>{p.name}</a>: {p.what}</li>)}
            </ul>
          )}
        </section>
      ) : null}
      {!list.data ? <p class="muted">Loading…</p> : list.data.length === 0 ? (
        <div class="empty">
          <p>No instances in this project yet.</p>
          <a class="button primary" href="#/instances/new">Create the first one</a>
        </div>
      ) : (
        <div class="table-wrap">
          <table class="list" aria-label="Instances">
            <thead>
              <tr><th>Name</th><th>Status</th><th>Flavor</th><th>Volume</th><th>Engine</th><th>Role</th><th>Archiving</th><th>Last backup</th></tr>
            </thead>
            <tbody>
              {list.data.map((i) => (
                <tr key={i.id}>
                  <td><a href={`#/instances/${i.id}`} class="strong">{i.name}</a><div class="small muted mono">{i.id.slice(0, 8)}</div></td>
                  <td><Status value={i.status} />{i.task ? <div class="small muted">{i.progress?.phase ?? i.task.step ?? i.task.kind}</div> : null}</td>
                  <td>{i.flavor.name ?? flavorName(i.flavor.id)}</td>
                  <td><Volume i={i} /></td>
                  <td>{!detail.data ? <span class="muted">…</span> : i.engine === 'devengine' ? <span class="badge warn" title={i.engine_warning ?? ''}>development engine</span> : engineLabel(i)}</td>
                  <td>{role(i, names)}</td>
                  <td>{archiving(i)}</td>
                  <td>{i.last_backup ? <span title={i.last_backup.completed}>{ago(i.last_backup.completed)}</span> : <span class="muted">{detail.data ? 'none' : '…'}</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </main>
  );
}
