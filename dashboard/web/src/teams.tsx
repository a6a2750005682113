// The teams page, the operator's: every team with its quota and use,
// creating a team (its first key shown once), deleting one and setting
// its limits.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, enc } from './api';
import { SecretOnce } from './keys';
import { switchCredential } from './session';
import { bytes, ConfirmButton, ErrorNote, FormEnd, RowError, Section, span, time, useAction, useClient, useLoad } from './ui';

type Limits = Record<string, number>;

// TeamInfo is one team of GET /v1/teams.
interface TeamInfo {
  id: string;
  name: string;
  createdAt: string;
  quota?: {
    limits: Limits; // enforced: the team's own over the server's defaults
    usage: Limits; // of the limits that count something
    own: Limits; // set for the team itself
    pausedDiskBytes: number | null;
  };
  apiKey?: { key: string; name: string };
}

type Unit = 'count' | 'mib' | 'seconds';

// limits are the server's quota limits (store.Limits), in its order.
const limits: { id: string; label: string; unit: Unit; about: string }[] = [
  { id: 'sandboxes', label: 'Sandboxes', unit: 'count', about: 'starting or running at once' },
  { id: 'vcpus', label: 'vCPUs', unit: 'count', about: 'of starting and running sandboxes' },
  { id: 'memory-mb', label: 'Memory', unit: 'mib', about: 'of starting and running sandboxes' },
  { id: 'disk-mb', label: 'Disk', unit: 'mib', about: 'of starting, running and paused sandboxes' },
  { id: 'timeout', label: 'Longest timeout', unit: 'seconds', about: 'a create or resume may ask for' },
  { id: 'paused', label: 'Paused sandboxes', unit: 'count', about: 'kept; the oldest beyond go' },
  { id: 'paused-retention', label: 'Paused retention', unit: 'seconds', about: 'after which a paused sandbox goes' },
];

// unitHint says how a limit is typed, in its label and its refusal.
const unitHint: Record<Unit, string> = { count: 'a whole number', mib: 'MiB, or as 4G or 1T', seconds: 'seconds, or as 30m, 2h or 7d' };

function show(unit: Unit, v: number | undefined): string {
  if (v === undefined) return '—';
  if (unit === 'mib') return bytes(v * 1024 * 1024);
  if (unit === 'seconds') return span(v * 1000);
  return String(v);
}

// limitNow says a limit in force; a limit missing is not enforced.
const limitNow = (unit: Unit, v: number | undefined) => (v === undefined ? 'no limit' : show(unit, v));

// scale maps the suffixes a limit may be typed with to its unit.
const scale: Record<Unit, Record<string, number>> = {
  count: { '': 1 },
  mib: { '': 1, m: 1, mib: 1, g: 1024, gib: 1024, t: 1 << 20, tib: 1 << 20 },
  seconds: { '': 1, s: 1, m: 60, h: 3600, d: 86400 },
};

// parseLimit reads a limit as typed: a whole number, with a unit where
// the limit has one ("4G" of memory, "24h" of timeout).
function parseLimit(unit: Unit, label: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const factor = m ? scale[unit][m[2].toLowerCase()] : undefined;
  const v = m && factor ? Number(m[1]) * factor : NaN;
  if (!Number.isInteger(v) || v < 0) throw new Error(`${label}: "${text.trim()}" does not read as ${unitHint[unit]} (0 or more)`);
  return v;
}

export function TeamsPage() {
  const client = useClient();
  const teams = useLoad(() => client.get<TeamInfo[]>('/v1/teams'), [client], 15000);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<TeamInfo | null>(null);
  const [editing, setEditing] = useState('');
  const rows = teams.data ?? [];
  const edited = rows.find((t) => t.id === editing);
  return (
    <Section
      title="Teams"
      actions={
        <button type="button" class="primary" onClick={() => setCreating(true)} disabled={creating}>
          New team
        </button>
      }
    >
      {creating && (
        <CreateTeam
          onClose={() => setCreating(false)}
          onCreated={(t) => {
            setCreating(false);
            setCreated(t);
            teams.reload();
          }}
        />
      )}
      {created?.apiKey && (
        <SecretOnce title={`Team “${created.name}” (${created.id}): its first API key`} secret={created.apiKey.key} onDone={() => setCreated(null)} />
      )}
      <ErrorNote error={teams.error} />
      <p class="muted small" aria-live="polite">
        {teams.data ? `${rows.length} ${rows.length === 1 ? 'team' : 'teams'}; use is now / limit.` : 'Loading…'}
      </p>
      <div class="table-box" tabIndex={0} aria-label="Teams table">
        <table class="cards">
          <thead>
            <tr>
              <th scope="col">Team</th>
              <th scope="col">Created</th>
              <th scope="col">Sandboxes</th>
              <th scope="col">vCPUs</th>
              <th scope="col">Memory</th>
              <th scope="col">Disk</th>
              <th scope="col">Paused</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((t) => (
              <TeamRow key={t.id} t={t} editing={t.id === editing} onEdit={() => setEditing(t.id === editing ? '' : t.id)} onChanged={teams.reload} />
            ))}
          </tbody>
        </table>
        {teams.data && rows.length === 0 && <p class="empty">No teams. Create one with “New team”.</p>}
      </div>
      {edited && <QuotaEditor key={edited.id} t={edited} onClose={() => setEditing('')} onSaved={teams.reload} />}
    </Section>
  );
}

// quotaCell says "used / limit" of one limit, "(own)" where the team
// has its own limit rather than the server's default.
function quotaCell(t: TeamInfo, id: string, unit: Unit): string {
  const q = t.quota;
  if (!q) return '—';
  const limit = q.limits[id];
  const used = q.usage[id];
  const own = id in q.own ? ' (own)' : '';
  return `${show(unit, used ?? 0)} / ${limitNow(unit, limit)}${own}`;
}

function TeamRow({ t, editing, onEdit, onChanged }: { t: TeamInfo; editing: boolean; onEdit: () => void; onChanged: () => void }) {
  const client = useClient();
  const [busy, error, run] = useAction();
  const [busyTeam, setBusyTeam] = useState(false);
  const remove = (force: boolean) =>
    run(async () => {
      try {
        await client.call('DELETE', `/v1/teams/${enc(t.id)}${force ? '?force=true' : ''}`);
      } catch (e) {
        // 409: the team still has sandboxes or volumes; force kills
        // the sandboxes (volumes stay, and the message says so).
        setBusyTeam(e instanceof ApiError && e.status === 409);
        throw e;
      }
      if (client.cred.team === t.id) {
        // The dashboard acted as this team: it must act as none now.
        switchCredential({ ...client.cred, team: undefined });
        return;
      }
      onChanged();
    });
  return (
    <>
      <tr>
        <th scope="row">
          <span class="two-line">
            <span>
              {t.name}
              {client.cred.team === t.id && <span class="tag">acting as</span>}
            </span>
            <span class="muted small">{t.id}</span>
          </span>
        </th>
        <td data-label="Created">{time(t.createdAt)}</td>
        <td data-label="Sandboxes">{quotaCell(t, 'sandboxes', 'count')}</td>
        <td data-label="vCPUs">{quotaCell(t, 'vcpus', 'count')}</td>
        <td data-label="Memory">{quotaCell(t, 'memory-mb', 'mib')}</td>
        <td data-label="Disk">{quotaCell(t, 'disk-mb', 'mib')}</td>
        <td data-label="Paused">
          {quotaCell(t, 'paused', 'count')}
          {!!t.quota?.pausedDiskBytes && <span class="muted small"> ({bytes(t.quota.pausedDiskBytes)} on disk)</span>}
        </td>
        <td>
          <div class="row-actions">
            <button type="button" onClick={onEdit} aria-pressed={editing} disabled={busy}>
              Quota…
            </button>
            {busyTeam ? (
              <ConfirmButton label="Force delete" confirmLabel="Kill its sandboxes and delete?" disabled={busy} onConfirm={() => remove(true)} />
            ) : (
              <ConfirmButton label="Delete" confirmLabel={`Really delete ${t.name}?`} disabled={busy} onConfirm={() => remove(false)} />
            )}
          </div>
        </td>
      </tr>
      <RowError error={error} columns={8} />
    </>
  );
}

// LimitInputs are one input per limit; an empty one means the server's
// default.
function LimitInputs({ values, onChange, current, idPrefix }: { values: Record<string, string>; onChange: (id: string, v: string) => void; current?: TeamInfo; idPrefix: string }) {
  return (
    <div class="grid">
      {limits.map((l) => {
        const hintId = `${idPrefix}-${l.id}-hint`;
        return (
          <div key={l.id}>
            <label>
              <span>
                {l.label}
                {l.unit !== 'count' && ` (${unitHint[l.unit]})`}
              </span>
              <input
                value={values[l.id] ?? ''}
                onInput={(e) => onChange(l.id, (e.target as HTMLInputElement).value)}
                placeholder="server default"
                autocomplete="off"
                aria-describedby={hintId}
              />
            </label>
            <span id={hintId} class="muted small limit-hint">
              {l.about}
              {current?.quota && `; now ${limitNow(l.unit, current.quota.limits[l.id])}${l.id in current.quota.own ? '' : ' (default)'}`}
            </span>
          </div>
        );
      })}
    </div>
  );
}

function CreateTeam({ onClose, onCreated }: { onClose: () => void; onCreated: (t: TeamInfo) => void }) {
  const client = useClient();
  const [name, setName] = useState('');
  const [values, setValues] = useState<Record<string, string>>({});
  const [busy, error, run] = useAction();
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  const submit = (ev: Event) => {
    ev.preventDefault();
    void run(async () => {
      const n = name.trim();
      if (!n) throw new Error('Name: a team needs a name');
      if (new TextEncoder().encode(n).length > 128) throw new Error('Name: at most 128 bytes');
      const quota: Limits = {};
      for (const l of limits) {
        const v = values[l.id]?.trim();
        if (v) quota[l.id] = parseLimit(l.unit, l.label, v);
      }
      onCreated(await client.call<TeamInfo>('POST', '/v1/teams', { name: n, quota }));
    });
  };
  return (
    <form class="create" onSubmit={submit} aria-labelledby="team-title">
      <h3 id="team-title">New team</h3>
      <div class="grid">
        <label>
          <span>Name</span>
          <input ref={first} value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} required maxLength={128} autocomplete="off" />
        </label>
      </div>
      <details>
        <summary>Quota (optional: empty limits take the server’s defaults)</summary>
        <LimitInputs idPrefix="new" values={values} onChange={(id, v) => setValues({ ...values, [id]: v })} />
      </details>
      <FormEnd error={error} busy={busy} label="Create team" busyLabel="Creating…" onCancel={onClose} />
    </form>
  );
}

// changesOf is the PATCH body: a value for each limit typed anew, null
// for each own limit emptied (the default applies again).
function changesOf(values: Record<string, string>, own: Limits): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const l of limits) {
    const text = values[l.id]?.trim() ?? '';
    if (!text) {
      if (l.id in own) out[l.id] = null;
      continue;
    }
    const v = parseLimit(l.unit, l.label, text);
    if (own[l.id] !== v) out[l.id] = v;
  }
  return out;
}

function QuotaEditor({ t, onClose, onSaved }: { t: TeamInfo; onClose: () => void; onSaved: () => void }) {
  const client = useClient();
  const own = t.quota?.own ?? {};
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(Object.entries(own).map(([k, v]) => [k, String(v)])));
  const [note, setNote] = useState('');
  const [busy, error, run] = useAction();
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  const save = async (changes: Record<string, number | null>) => {
    setNote('');
    if (!Object.keys(changes).length) {
      setNote('Nothing changed.');
      return;
    }
    await client.call('PATCH', `/v1/teams/${enc(t.id)}/quota`, changes);
    setNote('Saved.');
    onSaved();
  };
  const submit = (ev: Event) => {
    ev.preventDefault();
    void run(() => save(changesOf(values, own)));
  };
  const reset = () => {
    setValues({});
    void run(() => save(Object.fromEntries(Object.keys(own).map((k) => [k, null]))));
  };
  return (
    <form class="create" onSubmit={submit} aria-labelledby="quota-title">
      <h3 id="quota-title" tabIndex={-1} ref={heading}>
        Quota of {t.name}
      </h3>
      <p class="muted small">An empty limit takes the server’s default. A lower limit stops new use; what the team runs keeps running. 0 allows nothing.</p>
      <LimitInputs idPrefix={`q-${t.id}`} values={values} onChange={(id, v) => setValues({ ...values, [id]: v })} current={t} />
      <ErrorNote error={error} />
      <p class="ok small" aria-live="polite">
        {note}
      </p>
      <div class="actions">
        <button type="submit" class="primary" disabled={busy}>
          Save quota
        </button>
        <button type="button" onClick={reset} disabled={busy || !Object.keys(own).length}>
          Reset all to defaults
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </form>
  );
}
