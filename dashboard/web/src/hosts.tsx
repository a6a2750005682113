// The hosts page: every host that runs sandboxes, its capacity and what
// it last reported using, refreshed every 10 s.
import { ErrorNote, Section, span, time, useClient, useLoad, useNow } from './ui';

// HostInfo is one host of GET /v1/hosts.
interface HostInfo {
  id: string;
  name: string;
  url: string;
  state: string;
  runtime: string;
  capacity: { cpus: number; memoryMB: number; maxSandboxes: number };
  usage: { sandboxes: number; vcpus: number; memoryMB: number };
  capabilities?: Record<string, boolean>;
  registeredAt: string;
  lastHeartbeat: string | null;
  sandboxes: number;
}

// staleAfterMs is how old a heartbeat may be before the page says so:
// agents beat every few seconds.
const staleAfterMs = 60_000;

export function HostsPage() {
  const client = useClient();
  // GET /v1/hosts: any team's credential reads it, and so does the
  // operator's token acting as no team.
  const hosts = useLoad(() => client.get<HostInfo[]>('/v1/hosts'), [client], 10000);
  const now = useNow(5000);
  return (
    <Section
      title="Hosts"
      actions={
        <button type="button" onClick={hosts.reload} disabled={hosts.loading}>
          Refresh
        </button>
      }
    >
      <ErrorNote error={hosts.error} />
      <p class="muted small" aria-live="polite">
        {hosts.data ? `${hosts.data.length} ${hosts.data.length === 1 ? 'host' : 'hosts'}; refreshed every 10 s` : 'Loading…'}
      </p>
      <div class="table-box" tabIndex={0} aria-label="Hosts table">
        <table class="cards hosts">
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">State</th>
              <th scope="col">Runtime</th>
              <th scope="col">Sandboxes</th>
              <th scope="col">vCPUs</th>
              <th scope="col">Memory</th>
              <th scope="col">Last heartbeat</th>
            </tr>
          </thead>
          <tbody>
            {(hosts.data ?? []).map((h) => (
              <HostRow key={h.id} h={h} now={now} />
            ))}
          </tbody>
        </table>
        {hosts.data?.length === 0 && <p class="empty">No hosts have registered.</p>}
      </div>
    </Section>
  );
}

function HostRow({ h, now }: { h: HostInfo; now: number }) {
  const c = h.capacity;
  const u = h.usage;
  return (
    <tr>
      <th scope="row">
        <span class="two-line">
          <span>{h.name || h.id}</span>
          {h.name && h.name !== h.id && <span class="muted small">{h.id}</span>}
        </span>
      </th>
      <td data-label="State">
        <span class={`state ${h.state === 'ready' ? 'state-running' : 'state-error'}`}>{h.state}</span>
      </td>
      <td data-label="Runtime">
        {h.runtime}
        {h.capabilities && <span class="muted small"> {abilities(h.capabilities)}</span>}
      </td>
      <td data-label="Sandboxes">
        <Usage label="Sandboxes" used={h.sandboxes} of={c.maxSandboxes} text={`${h.sandboxes}${c.maxSandboxes ? ` / ${c.maxSandboxes}` : ' (no limit)'}`} />
      </td>
      <td data-label="vCPUs">
        <Usage label="vCPUs" used={u.vcpus} of={c.cpus} text={`${u.vcpus} / ${c.cpus}`} />
      </td>
      <td data-label="Memory">
        <Usage label="Memory" used={u.memoryMB} of={c.memoryMB} text={`${mib(u.memoryMB)} / ${mib(c.memoryMB)}`} />
      </td>
      <td data-label="Last heartbeat">
        <Heartbeat at={h.lastHeartbeat} now={now} />
      </td>
    </tr>
  );
}

// Usage is a bar and its numbers; the numbers carry the meaning, the bar
// only makes a full host easy to spot. Sandboxes may ask for more vCPUs
// than the host has (they share its CPUs): the text says so.
function Usage({ label, used, of, text }: { label: string; used: number; of: number; text: string }) {
  const over = of > 0 && used > of;
  return (
    <span class="usage">
      {of > 0 && <meter min={0} max={of} low={of * 0.7} high={of * 0.9} optimum={0} value={Math.min(used, of)} aria-label={`${label} used`} />}
      <span>
        {text}
        {over && ' (over capacity)'}
      </span>
    </span>
  );
}

function Heartbeat({ at, now }: { at: string | null; now: number }) {
  if (!at) return <span class="muted">none yet</span>;
  const age = now - new Date(at).getTime();
  return (
    <span title={time(at)}>
      {span(Math.max(0, age))} ago{age > staleAfterMs && <strong class="warn-text"> (stale)</strong>}
    </span>
  );
}

const mib = (n: number) => (n >= 1024 ? `${(n / 1024).toFixed(1)} GiB` : `${n} MiB`);

// abilities lists what the runtime can do beyond run: "(pause, fork)".
function abilities(caps: Record<string, boolean>): string {
  const on = Object.entries(caps)
    .filter(([, v]) => v === true)
    .map(([k]) => k);
  return on.length ? `(${on.join(', ')})` : '';
}
