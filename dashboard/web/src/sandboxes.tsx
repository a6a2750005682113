// The sandboxes page: a live table of the team's sandboxes with filters,
// the create form, and each row's actions.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { type Client, type Host, type Metric, q, type Sandbox } from './api';
import { extendSandbox, killSandbox, pauseSandbox, resumeSandbox } from './actions';
import { CreateSandbox } from './create';
import { href } from './router';
import { bytes, ConfirmButton, ErrorNote, type Loaded, messageOf, Section, span, useAction, useClient, useLoad, useNow } from './ui';

// listAll reads every page of GET /v2/sandboxes (100 a page); onPage,
// when given, gets the sandboxes read so far after each page but the
// last.
async function listAll(c: Client, state: string, metadata: string, onPage?: (sofar: Sandbox[]) => void): Promise<Sandbox[]> {
  const out: Sandbox[] = [];
  let next = '';
  do {
    const res = await c.raw('GET', `/v2/sandboxes${q({ state, metadata, limit: 100, nextToken: next })}`);
    out.push(...((await res.json()) as Sandbox[]));
    next = res.headers.get('X-Next-Token') ?? '';
    if (next) onPage?.(out.slice());
  } while (next);
  return out;
}

// A live list: every sandbox once listed; until the first listing of a
// filter ends, the pages read so far (more says there are more).
type LiveList = Loaded<Sandbox[]> & { more: boolean };

// useLiveSandboxes keeps the list fresh: it reloads when a lifecycle
// event arrives (GET /v1/events) and every 15 s besides. The table draws
// the first page while the others load; later reloads replace the list
// whole.
function useLiveSandboxes(state: string, metadata: string): LiveList {
  const client = useClient();
  const [partial, setPartial] = useState<{ key: string; rows: Sandbox[] } | null>(null);
  const key = `${state}\n${metadata}`;
  const listed = useRef('');
  const list = useLoad(
    () =>
      listAll(client, state, metadata, listed.current === key ? undefined : (rows) => setPartial({ key, rows })).then((all) => {
        listed.current = key;
        return all;
      }),
    [client, state, metadata],
    15000,
  );
  const reload = list.reload;
  useEffect(() => {
    const stop = new AbortController();
    let pending = 0;
    client
      .events('', stop.signal, () => {
        clearTimeout(pending);
        pending = setTimeout(reload, 150);
      })
      .catch(() => {});
    return () => {
      clearTimeout(pending);
      stop.abort();
    };
  }, [client, reload]);
  if (list.data === undefined && partial?.key === key) return { ...list, data: partial.rows, more: true };
  return { ...list, more: false };
}

const rowHeight = 44;

export function SandboxesPage() {
  const client = useClient();
  const [state, setState] = useState('running,paused');
  const [metaInput, setMetaInput] = useState('');
  const [metadata, setMetadata] = useState('');
  const [search, setSearch] = useState('');
  const [creating, setCreating] = useState(false);
  const [filterError, setFilterError] = useState('');
  const list = useLiveSandboxes(state, metadata);
  const hosts = useLoad(() => client.get<Host[]>('/v1/hosts'), [client], 30000);
  const runtimeOf = useMemo(() => new Map((hosts.data ?? []).map((h) => [h.id, h.runtime])), [hosts.data]);
  const rows = useMemo(() => filterRows(list.data ?? [], search), [list.data, search]);

  const applyMetadata = (ev: Event) => {
    ev.preventDefault();
    try {
      setMetadata(metadataQuery(metaInput));
      setFilterError('');
    } catch (e) {
      setFilterError(messageOf(e));
    }
  };

  return (
    <Section
      title="Sandboxes"
      actions={
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          New sandbox
        </button>
      }
    >
      {creating && <CreateSandbox onClose={() => setCreating(false)} onCreated={(id) => (location.hash = href('sandbox', id))} />}
      <form class="filters" onSubmit={applyMetadata} role="search">
        <label>
          <span>State</span>
          <select value={state} onChange={(e) => setState((e.target as HTMLSelectElement).value)}>
            <option value="running,paused">running and paused</option>
            <option value="running">running</option>
            <option value="paused">paused</option>
          </select>
        </label>
        <label>
          <span>Metadata</span>
          <input
            placeholder="key=value, …"
            value={metaInput}
            onInput={(e) => setMetaInput((e.target as HTMLInputElement).value)}
            onBlur={applyMetadata}
          />
        </label>
        <label>
          <span>Search</span>
          <input type="search" placeholder="ID, template, metadata" value={search} onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Filter</button>
      </form>
      <ErrorNote error={filterError || list.error} />
      <p class="muted small" aria-live="polite">
        {list.data ? `${rows.length} of ${list.data.length} sandboxes${list.more ? ', loading more…' : ''}` : 'Loading…'}
      </p>
      <SandboxTable rows={rows} runtimeOf={runtimeOf} onChanged={list.reload} />
    </Section>
  );
}

// metadataQuery turns "k=v, k2=v2" into E2B's metadata filter, itself a
// query string.
function metadataQuery(input: string): string {
  const u = new URLSearchParams();
  for (const raw of input.split(',')) {
    const pair = raw.trim();
    if (!pair) continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`metadata filter "${pair}": write key=value`);
    u.append(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return u.toString();
}

function filterRows(all: Sandbox[], search: string): Sandbox[] {
  const s = search.trim().toLowerCase();
  if (!s) return all;
  return all.filter((sb) =>
    [sb.sandboxID, sb.templateID, sb.alias ?? '', ...Object.entries(sb.metadata ?? {}).map(([k, v]) => `${k}=${v}`)].some((f) => f.toLowerCase().includes(s)),
  );
}

// SandboxTable renders only the rows in view (and a few around them), so
// that thousands of sandboxes scroll as smoothly as ten.
function SandboxTable({ rows, runtimeOf, onChanged }: { rows: Sandbox[]; runtimeOf: Map<string, string>; onChanged: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const [scroll, setScroll] = useState({ top: 0, height: 600 });
  useEffect(() => {
    const el = box.current!;
    const on = () => setScroll({ top: el.scrollTop, height: el.clientHeight });
    on();
    el.addEventListener('scroll', on, { passive: true });
    const ro = new ResizeObserver(on);
    ro.observe(el);
    return () => {
      el.removeEventListener('scroll', on);
      ro.disconnect();
    };
  }, []);
  const first = Math.max(0, Math.floor(scroll.top / rowHeight) - 10);
  const last = Math.min(rows.length, Math.ceil((scroll.top + scroll.height) / rowHeight) + 10);
  const shown = rows.slice(first, last);
  const metrics = useRowMetrics(shown);
  const now = useNow();
  return (
    <div class="table-box" ref={box} tabIndex={0} aria-label="Sandboxes table">
      <table class="sandboxes" aria-rowcount={rows.length + 1}>
        <thead>
          <tr>
            <th scope="col">Sandbox</th>
            <th scope="col">State</th>
            <th scope="col">Template</th>
            <th scope="col">Runtime</th>
            <th scope="col">Host</th>
            <th scope="col">Age</th>
            <th scope="col">Time left</th>
            <th scope="col">CPU</th>
            <th scope="col">Memory</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {first > 0 && <tr class="spacer" style={{ height: `${first * rowHeight}px` }} aria-hidden="true" />}
          {shown.map((sb, i) => (
            <Row key={sb.sandboxID} sb={sb} index={first + i} runtime={runtimeOf.get(sb.clientID) ?? ''} metric={metrics.get(sb.sandboxID)} now={now} onChanged={onChanged} />
          ))}
          {last < rows.length && <tr class="spacer" style={{ height: `${(rows.length - last) * rowHeight}px` }} aria-hidden="true" />}
        </tbody>
      </table>
      {rows.length === 0 && <p class="empty">No sandboxes here. Create one with “New sandbox”.</p>}
    </div>
  );
}

// useRowMetrics fetches CPU and memory now for the rows in view (running
// ones; GET /sandboxes/metrics takes up to 100), every 5 s.
function useRowMetrics(rows: Sandbox[]): Map<string, Metric> {
  const client = useClient();
  const ids = rows
    .filter((r) => r.state === 'running')
    .slice(0, 100)
    .map((r) => r.sandboxID)
    .join(',');
  const got = useLoad(() => (ids ? client.get<Record<string, Metric>>(`/sandboxes/metrics${q({ sandbox_ids: ids })}`) : Promise.resolve({})), [client, ids], 5000);
  return useMemo(() => new Map(Object.entries(got.data ?? {})), [got.data]);
}

function Row({ sb, index, runtime, metric, now, onChanged }: { sb: Sandbox; index: number; runtime: string; metric?: Metric; now: number; onChanged: () => void }) {
  const client = useClient();
  const [busy, error, run] = useAction();
  const act = (f: () => Promise<unknown>) => run(async () => {
    await f();
    onChanged();
  });
  const left = new Date(sb.endAt).getTime() - now;
  return (
    <tr aria-rowindex={index + 2} data-sandbox={sb.sandboxID}>
      <th scope="row">
        <a href={href('sandbox', sb.sandboxID)}>{sb.sandboxID}</a>
        {error && (
          <span class="error small" role="alert">
            {' '}
            {error}
          </span>
        )}
      </th>
      <td>
        <span class={`state state-${sb.state}`}>{sb.state}</span>
      </td>
      <td>{sb.alias || sb.templateID}</td>
      <td>{runtime || '—'}</td>
      <td>{sb.clientID || '—'}</td>
      <td>{span(now - new Date(sb.startedAt).getTime())}</td>
      <td>{sb.state === 'running' ? span(left) : '—'}</td>
      <td>{metric ? `${metric.cpuUsedPct.toFixed(1)}%` : '—'}</td>
      <td>{metric ? `${bytes(metric.memUsed)} / ${bytes(metric.memTotal)}` : '—'}</td>
      <td class="row-actions">
        {sb.state === 'running' ? (
          <>
            <button type="button" disabled={busy} onClick={() => act(() => pauseSandbox(client, sb.sandboxID))}>
              Pause
            </button>
            <button type="button" disabled={busy} onClick={() => act(() => extendSandbox(client, sb.sandboxID, sb.endAt))} title="Add 5 minutes to its time left">
              +5 min
            </button>
          </>
        ) : (
          <button type="button" disabled={busy} onClick={() => act(() => resumeSandbox(client, sb.sandboxID))}>
            Resume
          </button>
        )}
        <ConfirmButton label="Kill" confirmLabel="Really kill?" disabled={busy} onConfirm={() => act(() => killSandbox(client, sb.sandboxID))} />
      </td>
    </tr>
  );
}
