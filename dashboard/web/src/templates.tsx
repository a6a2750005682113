// The templates page: what the team can start sandboxes from, a form
// that builds a new template on top of another (E2B's v2 build flow) and
// the build's log as it runs.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, type Client, enc, q, sleep } from './api';
import { bytes, ConfirmButton, ErrorNote, FormEnd, messageOf, RowError, Section, time, useAction, useClient, useLoad } from './ui';

// TemplateRow is one template of GET /templates (E2B's Template).
interface TemplateRow {
  templateID: string;
  buildID: string;
  buildStatus: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  public: boolean;
  aliases: string[] | null;
  names: string[] | null;
  createdAt: string;
  buildCount: number;
}

// TemplateExtra is what GET /v1/templates adds: the tree's size, the
// hosts holding it and what hosts still making it are doing.
interface TemplateExtra {
  templateID: string;
  sizeBytes: number;
  hosts: string[];
  source: string;
  tags: string[];
  progress?: string;
}

interface LogEntry {
  timestamp: string;
  level: string;
  step?: string;
  message: string;
}

// BuildInfo is GET /templates/{id}/builds/{buildID}/status.
interface BuildInfo {
  status: 'waiting' | 'building' | 'ready' | 'error' | string;
  logEntries: LogEntry[];
  reason?: { message: string; step?: string };
}

interface Followed {
  templateID: string;
  buildID: string;
  name: string;
}

interface Listing {
  rows: TemplateRow[];
  extra: Map<string, TemplateExtra>;
}

// listTemplates reads E2B's listing and roost's beside it; roost's only
// adds detail, so a failure of it leaves the detail out, not the list.
async function listTemplates(c: Client): Promise<Listing> {
  const [rows, extra] = await Promise.all([c.get<TemplateRow[]>('/templates'), c.get<TemplateExtra[]>('/v1/templates').catch(() => [])]);
  return { rows, extra: new Map(extra.map((t) => [t.templateID, t])) };
}

const unfinished = (status: string) => status === 'building' || status === 'waiting';

export function TemplatesPage() {
  const client = useClient();
  const [creating, setCreating] = useState(false);
  const [followed, setFollowed] = useState<Followed | null>(null);
  const [building, setBuilding] = useState(false);
  // Poll fast only while a build runs: a listing asks every host.
  const list = useLoad(() => listTemplates(client), [client], building ? 5000 : 30000);
  useEffect(() => setBuilding(!!list.data?.rows.some((t) => unfinished(t.buildStatus))), [list.data]);
  const rows = list.data?.rows ?? [];
  const names = useMemo(() => rows.flatMap((t) => t.names ?? t.aliases ?? [t.templateID]), [list.data]);

  return (
    <Section
      title="Templates"
      actions={
        <>
          <button type="button" onClick={list.reload} disabled={list.loading}>
            Refresh
          </button>
          <button type="button" class="primary" onClick={() => setCreating(true)} disabled={creating}>
            New template
          </button>
        </>
      }
    >
      {creating && (
        <BuildForm
          names={names}
          onClose={() => setCreating(false)}
          onStarted={(f) => {
            setCreating(false);
            setFollowed(f);
            list.reload();
          }}
        />
      )}
      {followed && <BuildPanel key={followed.buildID} build={followed} onClose={() => setFollowed(null)} onFinished={list.reload} />}
      <ErrorNote error={list.error} />
      <p class="muted small" aria-live="polite">
        {list.data ? `${rows.length} ${rows.length === 1 ? 'template' : 'templates'}` : 'Loading…'}
      </p>
      <div class="table-box" tabIndex={0} aria-label="Templates table">
        <table class="cards">
          <thead>
            <tr>
              <th scope="col">Template</th>
              <th scope="col">Build</th>
              <th scope="col">CPUs</th>
              <th scope="col">Memory</th>
              <th scope="col">Disk</th>
              <th scope="col">Size</th>
              <th scope="col">Created</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((t) => (
              <TemplateItem key={t.templateID} t={t} extra={list.data?.extra.get(t.templateID)} onChanged={list.reload} onFollow={setFollowed} />
            ))}
          </tbody>
        </table>
        {list.data && rows.length === 0 && <p class="empty">No templates yet. Build one with “New template”.</p>}
      </div>
    </Section>
  );
}

// hostTree says whether a row is a host's own tree (base, imports): it
// is named by its name and cannot be deleted or rebuilt through the API.
const hostTree = (t: TemplateRow) => (t.names ?? []).includes(t.templateID);

function TemplateItem({ t, extra, onChanged, onFollow }: { t: TemplateRow; extra?: TemplateExtra; onChanged: () => void; onFollow: (f: Followed) => void }) {
  const client = useClient();
  const [busy, error, run] = useAction();
  const name = (t.names ?? t.aliases ?? [])[0] ?? t.templateID;
  const own = !hostTree(t);
  // The listing shows the current build's ID but the latest one's
  // status: the log to show is the latest build's.
  const followLatest = () =>
    run(async () => {
      const detail = await client.get<{ builds: { buildID: string }[] }>(`/templates/${enc(t.templateID)}`);
      const latest = detail.builds[0];
      if (!latest) throw new Error('this template has no builds');
      onFollow({ templateID: t.templateID, buildID: latest.buildID, name });
    });
  return (
    <>
      <tr>
        <th scope="row">
          <span class="two-line">
            <span>{name}</span>
            {own && <span class="muted small">{t.templateID}</span>}
            {!own && <span class="muted small">the hosts’ own</span>}
          </span>
        </th>
        <td data-label="Build">
          <BuildStatus status={t.buildStatus} />
          {extra?.progress && <span class="muted small progress-note"> {extra.progress}</span>}
        </td>
        <td data-label="CPUs">{t.cpuCount || '—'}</td>
        <td data-label="Memory">{t.memoryMB ? `${t.memoryMB} MiB` : '—'}</td>
        <td data-label="Disk">{t.diskSizeMB ? `${t.diskSizeMB} MiB` : '—'}</td>
        <td data-label="Size">{extra?.sizeBytes ? bytes(extra.sizeBytes) : '—'}</td>
        <td data-label="Created">{when(t.createdAt)}</td>
        <td>
          <div class="row-actions">
            {own && (
              <>
                <button type="button" disabled={busy} onClick={followLatest}>
                  Build log
                </button>
                <ConfirmButton
                  label="Delete"
                  confirmLabel={`Really delete ${name}?`}
                  disabled={busy}
                  onConfirm={() =>
                    run(async () => {
                      await client.call('DELETE', `/templates/${enc(t.templateID)}`);
                      onChanged();
                    })
                  }
                />
              </>
            )}
          </div>
        </td>
      </tr>
      <RowError error={error} columns={9} />
    </>
  );
}

// when is a time, or a dash for the zero time a host's tree still being
// built reports.
function when(iso: string): string {
  return new Date(iso).getUTCFullYear() <= 1970 ? '—' : time(iso);
}

function BuildStatus({ status }: { status: string }) {
  const cls = status === 'ready' ? 'state-running' : status === 'error' ? 'state-error' : 'state-paused';
  return <span class={`state ${cls}`}>{status || 'unknown'}</span>;
}

// templateRef is a template's name, with a tag if given: what the server
// accepts (1-63 characters of [a-zA-Z0-9._-] each).
const templateRef = /^[a-zA-Z0-9._-]{1,63}(:[a-zA-Z0-9._-]{1,63})?$/;

interface BuildRequest {
  name: string;
  cpuCount?: number;
  memoryMB?: number;
  body: {
    fromTemplate: string;
    steps: Step[];
    startCmd?: string;
    readyCmd?: string;
    force: boolean;
  };
}

interface FormState {
  name: string;
  base: string;
  commands: string;
  runAs: string;
  startCmd: string;
  readyCmd: string;
  cpu: string;
  memory: string;
  force: boolean;
}

// buildRequest checks the form and turns it into the create and the
// trigger; every refusal names the field. known are the names of the
// templates listed: a base outside them would fail only once built.
function buildRequest(f: FormState, known: string[]): BuildRequest {
  const name = f.name.trim();
  if (!templateRef.test(name)) throw new Error(`Name: "${name}" is not a name or name:tag of letters, digits, ".", "_" and "-" (at most 63 each)`);
  if (name.startsWith('m-')) throw new Error('Name: names starting with "m-" are reserved for hosts’ caches');
  const base = f.base.trim() || 'base';
  if (!templateRef.test(base)) throw new Error(`Base template: "${base}" is not a template name`);
  if (known.length && !known.includes(base.split(':')[0])) throw new Error(`Base template: there is no template "${base.split(':')[0]}" (try ${known.slice(0, 5).join(', ')})`);
  if (f.readyCmd.trim() && !f.startCmd.trim()) throw new Error('Ready command: it checks the start command, which is empty');
  const req: BuildRequest = {
    name,
    body: { fromTemplate: base, steps: parseSteps(f.commands, f.runAs), force: f.force },
  };
  if (f.startCmd.trim()) req.body.startCmd = f.startCmd.trim();
  if (f.readyCmd.trim()) req.body.readyCmd = f.readyCmd.trim();
  if (f.cpu.trim()) req.cpuCount = whole(f.cpu, 'CPUs', 1024);
  if (f.memory.trim()) req.memoryMB = whole(f.memory, 'Memory', 1 << 24);
  return req;
}

function whole(s: string, what: string, max: number): number {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${what}: "${s.trim()}" is not a whole number from 1 to ${max}`);
  return n;
}

type Step = { type: string; args: string[] };

// parseSteps reads the commands box: each line a shell command (a RUN),
// or a Dockerfile instruction of those a build without uploaded files
// can run (RUN, ENV, WORKDIR, USER). A line ending in "\" goes on.
// Instructions are upper case, so a command such as "env" stays a command.
function parseSteps(text: string, runAs: string): Step[] {
  const steps: Step[] = [];
  let user = runAs;
  let joined = '';
  let first = 0;
  text.split(/\r?\n/).forEach((raw, i) => {
    if (!joined) first = i;
    const line = raw.trimEnd();
    if (line.endsWith('\\')) {
      joined += line.slice(0, -1) + ' ';
      return;
    }
    const step = parseLine((joined + line).trim(), `Commands, line ${first + 1}`, user);
    joined = '';
    if (!step) return;
    steps.push(step);
    // After a USER, RUNs run as the template's user: the one it names.
    if (step.type === 'USER') user = '';
  });
  if (joined.trim()) steps.push(parseLine(joined.trim(), `Commands, line ${first + 1}`, user)!);
  return steps;
}

// parseLine reads one line of the commands box; null for a blank line or
// a comment.
function parseLine(line: string, where: string, user: string): Step | null {
  if (!line || line.startsWith('#')) return null;
  const [word] = line.split(/\s/, 1);
  const rest = line.slice(word.length).trim();
  const run = (cmd: string): Step => ({ type: 'RUN', args: user ? [cmd, user] : [cmd] });
  switch (word) {
    case 'RUN':
      if (!rest) throw new Error(`${where}: RUN needs a command`);
      return run(rest);
    case 'ENV':
      return { type: 'ENV', args: envArgs(rest, where) };
    case 'WORKDIR':
      if (!rest) throw new Error(`${where}: WORKDIR needs a directory`);
      return { type: 'WORKDIR', args: [rest] };
    case 'USER':
      if (!/^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$/i.test(rest)) throw new Error(`${where}: USER needs one user name (user or user:group)`);
      return { type: 'USER', args: [rest] };
    case 'FROM':
      throw new Error(`${where}: choose what to build on in “Base template”`);
    case 'COPY':
    case 'ADD':
      throw new Error(`${where}: ${word} needs files uploaded: use roost template build (the CLI) for it`);
    case 'CMD':
    case 'ENTRYPOINT':
      throw new Error(`${where}: put the command in “Start command”`);
    default:
      return run(line);
  }
}

// envArgs reads "K=V K2=V2" (or Dockerfile's old "K V") into E2B's flat
// [K, V, K2, V2]. Values with spaces need the old form.
function envArgs(rest: string, where: string): string[] {
  const key = /^[A-Za-z_][A-Za-z0-9_]*$/;
  const first = rest.split(/\s+/, 1)[0] ?? '';
  if (!first.includes('=')) {
    const value = rest.slice(first.length).trim();
    if (!key.test(first) || !value) throw new Error(`${where}: ENV wants KEY=value or KEY value`);
    return [first, value];
  }
  const out: string[] = [];
  for (const pair of rest.split(/\s+/)) {
    const eq = pair.indexOf('=');
    if (eq <= 0 || !key.test(pair.slice(0, eq))) throw new Error(`${where}: "${pair}" is not KEY=value`);
    out.push(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

// startBuild runs E2B's v2 flow: POST /v3/templates makes the template
// (or finds the team's of that name) and a waiting build, then the
// trigger starts it. A template the trigger leaves with nothing but its
// refused build is deleted again, so a typo leaves no empty template.
async function startBuild(c: Client, req: BuildRequest): Promise<Followed> {
  const created = await c.call<{ templateID: string; buildID: string }>('POST', '/v3/templates', {
    name: req.name,
    cpuCount: req.cpuCount,
    memoryMB: req.memoryMB,
  });
  const path = `/v2/templates/${enc(created.templateID)}/builds/${enc(created.buildID)}`;
  try {
    await c.call('POST', path, req.body);
  } catch (e) {
    const t = await c.get<{ builds: { buildID: string }[] }>(`/templates/${enc(created.templateID)}`).catch(() => null);
    if (t && t.builds.length === 1 && t.builds[0].buildID === created.buildID) {
      await c.call('DELETE', `/templates/${enc(created.templateID)}`).catch(() => {});
    }
    throw e;
  }
  return { templateID: created.templateID, buildID: created.buildID, name: req.name };
}

function BuildForm({ names, onClose, onStarted }: { names: string[]; onClose: () => void; onStarted: (f: Followed) => void }) {
  const client = useClient();
  const [form, setForm] = useState<FormState>({ name: '', base: 'base', commands: '', runAs: 'root', startCmd: '', readyCmd: '', cpu: '', memory: '', force: false });
  const [busy, error, run] = useAction();
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  const set = (k: keyof FormState) => (e: Event) => {
    const el = e.target as HTMLInputElement;
    setForm({ ...form, [k]: el.type === 'checkbox' ? el.checked : el.value });
  };
  const submit = (ev: Event) => {
    ev.preventDefault();
    void run(async () => onStarted(await startBuild(client, buildRequest(form, names))));
  };
  return (
    <form class="create" onSubmit={submit} aria-labelledby="build-title">
      <h3 id="build-title">New template</h3>
      <div class="grid">
        <label>
          <span>Name (name or name:tag)</span>
          <input ref={first} value={form.name} onInput={set('name')} required autocomplete="off" spellcheck={false} placeholder="my-app" />
        </label>
        <label>
          <span>Base template</span>
          <input list="build-bases" value={form.base} onInput={set('base')} spellcheck={false} />
          <datalist id="build-bases">
            {names.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
        </label>
        <label>
          <span>Run commands as</span>
          <select value={form.runAs} onChange={set('runAs')}>
            <option value="root">root</option>
            <option value="">the base template’s user</option>
          </select>
        </label>
        <label>
          <span>CPUs</span>
          <input inputMode="numeric" placeholder="2" value={form.cpu} onInput={set('cpu')} />
        </label>
        <label>
          <span>Memory (MiB)</span>
          <input inputMode="numeric" placeholder="512" value={form.memory} onInput={set('memory')} />
        </label>
        <label class="wide">
          <span>Commands: one shell command a line (each a RUN step), or the Dockerfile instructions RUN, ENV, WORKDIR and USER</span>
          <textarea
            rows={6}
            value={form.commands}
            onInput={set('commands')}
            spellcheck={false}
            placeholder={'apt-get update && apt-get install -y cowsay\nENV MODE=demo\nWORKDIR /home/user'}
          />
        </label>
        <label class="wide">
          <span>Start command (optional: runs in every sandbox, in the background)</span>
          <input value={form.startCmd} onInput={set('startCmd')} spellcheck={false} placeholder="python3 -m http.server 8000" />
        </label>
        <label class="wide">
          <span>Ready command (optional: the sandbox is ready once it exits 0)</span>
          <input value={form.readyCmd} onInput={set('readyCmd')} spellcheck={false} placeholder="curl -fs localhost:8000" />
        </label>
        <label class="check">
          <input type="checkbox" checked={form.force} onChange={set('force')} />
          <span>Run every step again (ignore the cache)</span>
        </label>
      </div>
      <FormEnd error={error} busy={busy} label="Build" busyLabel="Starting…" onCancel={onClose} />
    </form>
  );
}

// maxLogPage is the most entries one status answer carries: a full page
// means more are waiting.
const maxLogPage = 100;

// useBuildLog follows a build: it polls its status from the last log
// entry it has until the build is ready or failed and the log is read.
function useBuildLog(templateID: string, buildID: string) {
  const client = useClient();
  const [entries, setEntries] = useState<LogEntry[]>([]);
  const [info, setInfo] = useState<BuildInfo | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    const stop = new AbortController();
    const follow = async () => {
      let offset = 0;
      while (!stop.signal.aborted) {
        let got: BuildInfo;
        try {
          got = await client.get<BuildInfo>(`/templates/${enc(templateID)}/builds/${enc(buildID)}/status${q({ logsOffset: offset, limit: maxLogPage })}`);
          setError('');
        } catch (e) {
          // A refusal ends the watch; a dropped connection is retried.
          if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
          setError(`${messageOf(e)}; trying again`);
          await sleep(2000, stop.signal);
          continue;
        }
        if (stop.signal.aborted) return;
        offset += got.logEntries.length;
        if (got.logEntries.length) setEntries((prev) => [...prev, ...got.logEntries]);
        setInfo(got);
        if (got.logEntries.length === maxLogPage) continue;
        if (!unfinished(got.status)) return;
        await sleep(1000, stop.signal);
      }
    };
    follow().catch((e) => setError(messageOf(e)));
    return () => stop.abort();
  }, [client, templateID, buildID]);
  return { entries, info, error };
}

function BuildPanel({ build, onClose, onFinished }: { build: Followed; onClose: () => void; onFinished: () => void }) {
  const { entries, info, error } = useBuildLog(build.templateID, build.buildID);
  const status = info?.status ?? 'waiting';
  const done = info !== null && !unfinished(status);
  const finished = useRef(false);
  // The form that started the build is gone: the reader goes on here.
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  useEffect(() => {
    if (done && !finished.current) {
      finished.current = true;
      onFinished();
    }
  }, [done]);
  return (
    <section class="create" aria-labelledby="build-log-title">
      <div class="panel-head">
        <h3 id="build-log-title" tabIndex={-1} ref={heading}>
          Build of {build.name} <span class="muted small mono">{build.buildID}</span>
        </h3>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <p aria-live="polite">
        Status: <BuildStatus status={status} /> {status === 'ready' && <span class="ok">— sandboxes can start from {build.name} now.</span>}
      </p>
      {info?.reason && (
        <p class="error" role="alert">
          Build failed: {info.reason.message}
        </p>
      )}
      <ErrorNote error={error} />
      <LogView entries={entries} />
    </section>
  );
}

// LogView shows the log, keeping to its end while the reader is there.
function LogView({ entries }: { entries: LogEntry[] }) {
  const box = useRef<HTMLPreElement>(null);
  const atEnd = useRef(true);
  useEffect(() => {
    const el = box.current;
    if (el && atEnd.current) el.scrollTop = el.scrollHeight;
  }, [entries.length]);
  const onScroll = () => {
    const el = box.current!;
    atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  return (
    <pre class="build-log" ref={box} onScroll={onScroll} tabIndex={0} role="log" aria-label="Build log">
      {entries.length === 0 && <span class="muted">No log yet.</span>}
      {entries.map((e, i) => (
        <div key={i} class={`log-${e.level}`}>
          <span class="muted">{clock(e.timestamp)}</span> {e.level === 'warn' || e.level === 'error' ? `${e.level}: ` : ''}
          {e.message}
        </div>
      ))}
    </pre>
  );
}

function clock(iso: string): string {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
}
