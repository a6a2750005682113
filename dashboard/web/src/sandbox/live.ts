// What the sandbox page keeps fresh: the sandbox's detail (polled, and
// reloaded when one of its lifecycle events arrives) and those events.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, type Client, enc, type SandboxDetail, type SandboxEvent } from '../api';
import { type Loaded, messageOf, useClient, useLoad } from '../ui';

// detailPollMs is how often the detail is read even without events: the
// time left and the disk held change without one.
const detailPollMs = 3000;

// maxLiveEvents bounds the events kept from the stream while the page is
// open; the events tab reads older ones from the API.
const maxLiveEvents = 200;

// getDetail reads roost's detail of the sandbox; null when the API no
// longer knows it (killed, or its time ran out), which the page says
// plainly rather than as an error.
export async function getDetail(c: Client, id: string): Promise<SandboxDetail | null> {
  try {
    return await c.get<SandboxDetail>(`/v1/sandboxes/${enc(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

// useDetail polls the detail until the sandbox is gone: it never comes
// back, and each 404 would be one more line in the browser's console.
export function useDetail(id: string): Loaded<SandboxDetail | null> {
  const client = useClient();
  const [gone, setGone] = useState('');
  return useLoad(
    async () => {
      const d = await getDetail(client, id);
      if (d === null) setGone(id);
      return d;
    },
    [client, id],
    gone === id ? 0 : detailPollMs,
  );
}

export interface LiveEvents {
  events: SandboxEvent[];
  error: string;
}

// useLiveEvents follows the sandbox's lifecycle events (GET /v1/events)
// while the page is open, newest first, calling onEvent for each: one
// stream serves both the header's refresh and the events tab.
export function useLiveEvents(id: string, onEvent: () => void): LiveEvents {
  const client = useClient();
  const [events, setEvents] = useState<SandboxEvent[]>([]);
  const [error, setError] = useState('');
  useEffect(() => {
    setEvents([]);
    setError('');
    const stop = new AbortController();
    let pending = 0;
    client
      .events(`?sandbox=${enc(id)}`, stop.signal, (e) => {
        setEvents((old) => (old.some((o) => o.id === e.id) ? old : [e, ...old].slice(0, maxLiveEvents)));
        // Several events often come at once (a pause is paused and
        // updated): one reload for them.
        clearTimeout(pending);
        pending = setTimeout(onEvent, 150);
      })
      .catch((e) => setError(messageOf(e)));
    return () => {
      clearTimeout(pending);
      stop.abort();
    };
    // onEvent is the detail's reload, stable for the page's life.
  }, [client, id]);
  return { events, error };
}
