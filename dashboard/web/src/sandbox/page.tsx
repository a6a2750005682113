// The sandbox page (#/sandbox/{id}/{tab}): a header with the sandbox's
// state and actions, kept fresh without a reload, and one tab at a time
// of its terminal, files, ports, metrics, logs and events.
import type { ComponentChildren } from 'preact';
import { type SandboxDetail, type SandboxEvent } from '../api';
import { extendSandbox, killSandbox, pauseSandbox, resumeSandbox } from '../actions';
import { href } from '../router';
import { bytes, ConfirmButton, ErrorNote, span, useAction, useClient, useNow } from '../ui';
import { EventsTab } from './events';
import { FilesTab } from './files';
import { type LiveEvents, useDetail, useLiveEvents } from './live';
import { LogsTab } from './logs';
import { MetricsTab } from './metrics';
import { PortsTab } from './ports';
import { TerminalTab } from './terminal';

const tabs = ['terminal', 'files', 'ports', 'metrics', 'logs', 'events'] as const;


// pausedHow says how a paused sandbox is kept (roost's detail's paused).
const pausedHow: Record<string, string> = {
  frozen: 'frozen in memory',
  hibernated: 'memory saved to disk',
  filesystem: 'files kept; resume boots it afresh',
};

export function SandboxPage({ id, tab }: { id: string; tab: string }) {
  const detail = useDetail(id);
  const live = useLiveEvents(id, detail.reload);
  const sb = detail.data;
  if (sb === undefined) {
    return (
      <section class="panel" aria-label={`Sandbox ${id}`}>
        <Title id={id} />
        {detail.error ? <ErrorNote error={`Cannot read this sandbox: ${detail.error}`} /> : <p class="muted">Loading…</p>}
      </section>
    );
  }
  if (sb === null) return <Gone id={id} live={live.events} />;
  return (
    <>
      <Header sb={sb} error={detail.error} onChanged={detail.reload} />
      <section class="panel sandbox-body" aria-label={`Sandbox ${tab}`}>
        <Tabs id={id} current={tab} />
        <TabBody sb={sb} tab={tab} live={live} onChanged={detail.reload} />
      </section>
    </>
  );
}

function TabBody({ sb, tab, live, onChanged }: { sb: SandboxDetail; tab: string; live: LiveEvents; onChanged: () => void }) {
  const running = sb.state === 'running';
  switch (tab) {
    case 'terminal':
      // The terminal stays mounted while the sandbox is paused, so that
      // its screen stays and it reattaches once the sandbox runs again.
      return (
        <>
          {!running && <NotRunning sb={sb} what="The terminal" onChanged={onChanged} />}
          <TerminalTab id={sb.sandboxID} running={running} />
        </>
      );
    case 'files':
      return running ? <FilesTab id={sb.sandboxID} /> : <NotRunning sb={sb} what="Its files" onChanged={onChanged} />;
    case 'ports':
      return running ? <PortsTab sb={sb} /> : <NotRunning sb={sb} what="Its ports" onChanged={onChanged} />;
    case 'metrics':
      return <MetricsTab id={sb.sandboxID} />;
    case 'logs':
      return <LogsTab id={sb.sandboxID} />;
    case 'events':
      return <EventsTab id={sb.sandboxID} live={live.events} liveError={live.error} />;
  }
  return (
    <p>
      This page has no tab “{tab}”. Open the <a href={href('sandbox', sb.sandboxID, 'terminal')}>terminal</a>.
    </p>
  );
}

function Tabs({ id, current }: { id: string; current: string }) {
  return (
    <nav class="tabs" aria-label="Sandbox views">
      {tabs.map((t) => (
        <a key={t} href={href('sandbox', id, t)} aria-current={t === current ? 'page' : undefined}>
          {t}
        </a>
      ))}
    </nav>
  );
}

function Header({ sb, error, onChanged }: { sb: SandboxDetail; error: string; onChanged: () => void }) {
  const client = useClient();
  const now = useNow();
  const [busy, actError, run] = useAction();
  const act = (f: () => Promise<unknown>) =>
    run(async () => {
      await f();
      onChanged();
    });
  const left = new Date(sb.endAt).getTime() - now;
  const running = sb.state === 'running';
  const extend = () => extendSandbox(client, sb.sandboxID, sb.endAt);
  return (
    <section class="panel sandbox-head" aria-label="Sandbox" id="sandbox-header">
      <header class="panel-head">
        <Title id={sb.sandboxID} />
        <div class="actions">
          {running && (
            <>
              <button type="button" id="sandbox-pause" disabled={busy} onClick={() => act(() => pauseSandbox(client, sb.sandboxID))}>
                Pause
              </button>
              <button type="button" id="sandbox-extend" disabled={busy} onClick={() => act(extend)} title="Add 5 minutes to its time left">
                +5 min
              </button>
            </>
          )}
          {sb.state === 'paused' && (
            <button type="button" id="sandbox-resume" disabled={busy} onClick={() => act(() => resumeSandbox(client, sb.sandboxID))}>
              Resume
            </button>
          )}
          <ConfirmButton label="Kill" confirmLabel="Really kill?" disabled={busy} onConfirm={() => act(() => killSandbox(client, sb.sandboxID))} />
        </div>
      </header>
      <dl class="facts">
        <Fact name="State">
          <span id="sandbox-state" class={`state state-${sb.state}`}>
            {sb.state}
          </span>
          {sb.paused && <span class="muted small"> ({pausedHow[sb.paused] ?? sb.paused})</span>}
        </Fact>
        <Fact name="Template">{sb.alias || sb.templateID}</Fact>
        <Fact name="Runtime">{sb.runtime || '—'}</Fact>
        <Fact name="Host">{sb.clientID || '—'}</Fact>
        <Fact name="Age">{span(now - new Date(sb.startedAt).getTime())}</Fact>
        <Fact name="Time left">
          <span id="sandbox-time-left">{running ? (left > 0 ? span(left) : 'ending…') : '—'}</span>
        </Fact>
        <Fact name="Size">
          {sb.cpuCount} vCPU, {sb.memoryMB} MiB
        </Fact>
        <Fact name="Disk held">{bytes(sb.diskBytes)}</Fact>
      </dl>
      {sb.pauseNote && <p class="muted small">{sb.pauseNote}</p>}
      <ErrorNote error={actError} />
      {error && <p class="muted small">Could not refresh (showing what was last read): {error}</p>}
    </section>
  );
}

function Title({ id }: { id: string }) {
  return (
    <h2>
      <span class="muted small">Sandbox </span>
      <span class="mono">{id}</span>
    </h2>
  );
}

function Fact({ name, children }: { name: string; children: ComponentChildren }) {
  return (
    <div>
      <dt>{name}</dt>
      <dd>{children}</dd>
    </div>
  );
}

// NotRunning stands in for what only a running sandbox has, offering to
// resume a paused one.
function NotRunning({ sb, what, onChanged }: { sb: SandboxDetail; what: string; onChanged: () => void }) {
  const client = useClient();
  const [busy, error, run] = useAction();
  const paused = sb.state === 'paused';
  return (
    <div class="note" role="status">
      <p>
        {what} can be reached only while the sandbox runs; it is {sb.state}
        {paused ? '. Resume it to carry on where it stopped.' : '.'}
      </p>
      {paused && (
        <button
          type="button"
          class="primary"
          disabled={busy}
          onClick={() =>
            run(async () => {
              await resumeSandbox(client, sb.sandboxID);
              onChanged();
            })
          }
        >
          {busy ? 'Resuming…' : 'Resume'}
        </button>
      )}
      <ErrorNote error={error} />
    </div>
  );
}

// Gone is the page of a sandbox the API no longer has: killed, or its
// time ran out. Its lifecycle events outlive it.
function Gone({ id, live }: { id: string; live: SandboxEvent[] }) {
  return (
    <>
      <section class="panel" aria-label={`Sandbox ${id}`}>
        <Title id={id} />
        <p id="sandbox-gone" role="alert">
          This sandbox no longer exists: it was killed, or its time ran out. Its files and processes are gone.
        </p>
        <p>
          Back to the <a href={href('sandboxes')}>sandboxes</a>.
        </p>
      </section>
      <section class="panel" aria-label="What happened to it">
        <h3>What happened to it</h3>
        <EventsTab id={id} live={live} liveError="" />
      </section>
    </>
  );
}
