// The events tab: the sandbox's lifecycle events (E2B's GET
// /events/sandboxes/{id}), newest first, with those that arrive while
// the page is open (the page's stream, passed in) on top.
import { useMemo } from 'preact/hooks';
import { enc, q, type SandboxEvent } from '../api';
import { ErrorNote, span, time, useClient, useLoad } from '../ui';

// historyLimit is how many past events are read: E2B's largest page.
const historyLimit = 100;

export function EventsTab({ id, live, liveError }: { id: string; live: SandboxEvent[]; liveError: string }) {
  const client = useClient();
  const history = useLoad(() => client.get<SandboxEvent[]>(`/events/sandboxes/${enc(id)}${q({ limit: historyLimit })}`), [client, id]);
  const events = useMemo(() => {
    const byID = new Map<string, SandboxEvent>();
    for (const e of [...live, ...(history.data ?? [])]) if (!byID.has(e.id)) byID.set(e.id, e);
    return [...byID.values()].sort((a, b) => Date.parse(b.timestamp) - Date.parse(a.timestamp));
  }, [live, history.data]);
  return (
    <div class="events-tab">
      <ErrorNote error={history.error} />
      {liveError && <p class="muted small">New events are not followed: {liveError}</p>}
      <p class="muted small">{history.data ? `${events.length} ${events.length === 1 ? 'event' : 'events'}, newest first; new ones appear as they happen.` : 'Reading…'}</p>
      <ol id="events-list" class="events" aria-live="polite">
        {events.map((e) => (
          <li key={e.id} data-event-type={e.type}>
            <span class="event-type">{e.type.replace(/^sandbox\.lifecycle\./, '')}</span>
            <time dateTime={e.timestamp}>{time(e.timestamp)}</time>
            <span class="muted small">{details(e)}</span>
          </li>
        ))}
      </ol>
    </div>
  );
}

// details says what an event's data adds: roost's reason, the new end
// of an update, the run that ended.
function details(e: SandboxEvent): string {
  const d = (e.eventData ?? {}) as { reason?: string; end_at?: string; execution?: { execution_time?: number } };
  const parts: string[] = [];
  if (d.reason) parts.push(`reason: ${d.reason}`);
  if (d.end_at) parts.push(`ends ${time(d.end_at)}`);
  if (d.execution?.execution_time !== undefined) parts.push(`ran ${span(d.execution.execution_time)}`);
  return parts.join('; ');
}
