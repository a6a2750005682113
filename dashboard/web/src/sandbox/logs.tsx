// The logs tab: what the sandbox's init and envd wrote (GET
// /v2/sandboxes/{id}/logs), oldest first, followed as it grows.
import { useEffect, useRef, useState } from 'preact/hooks';
import { type Client, enc, q, sleep } from '../api';
import { ErrorNote, messageOf, useClient } from '../ui';

interface LogEntry {
  timestamp: string;
  level: string;
  message: string;
  fields: Record<string, string> | null;
}

const followPollMs = 2000;
// pageLimit is the API's most entries an answer; maxShown what the page
// keeps, dropping the oldest.
const pageLimit = 1000;
const maxShown = 5000;

const levels = ['', 'debug', 'info', 'warn', 'error'];

interface Shown {
  entries: LogEntry[];
  error: string;
  loaded: boolean;
}

export function LogsTab({ id }: { id: string }) {
  const client = useClient();
  const [level, setLevel] = useState('');
  const [searchInput, setSearchInput] = useState('');
  const [search, setSearch] = useState('');
  const [follow, setFollow] = useState(true);
  const shown = useFollowedLogs(client, id, level, search, follow);
  const box = useRef<HTMLDivElement>(null);
  // stick: the reader is at the newest line, so new lines scroll in.
  const stick = useRef(true);

  useEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [shown.entries]);

  return (
    <div class="logs-tab">
      <form
        class="filters"
        role="search"
        onSubmit={(ev) => {
          ev.preventDefault();
          setSearch(searchInput.trim());
        }}
      >
        <label>
          <span>Level at least</span>
          <select id="logs-level" value={level} onChange={(e) => setLevel((e.target as HTMLSelectElement).value)}>
            {levels.map((l) => (
              <option key={l} value={l}>
                {l || 'any'}
              </option>
            ))}
          </select>
        </label>
        <label>
          <span>Message contains</span>
          <input id="logs-search" type="search" value={searchInput} maxLength={256} onInput={(e) => setSearchInput((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Filter</button>
        <label class="check">
          <input id="logs-follow" type="checkbox" checked={follow} onChange={(e) => setFollow((e.target as HTMLInputElement).checked)} />
          <span>Follow</span>
        </label>
      </form>
      <ErrorNote error={shown.error} />
      <p class="muted small">
        {shown.loaded ? `${shown.entries.length} ${shown.entries.length === 1 ? 'line' : 'lines'}${shown.entries.length >= maxShown ? ' (the newest kept)' : ''}, newest last${follow ? ', following' : ''}.` : 'Reading…'}
      </p>
      <div
        class="logs-box"
        ref={box}
        tabIndex={0}
        aria-label="Sandbox logs"
        onScroll={(e) => {
          const el = e.currentTarget as HTMLDivElement;
          stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 24;
        }}
      >
        {shown.loaded && shown.entries.length === 0 && <p class="empty">No lines{level || search ? ' match' : ' yet'}.</p>}
        <ol id="logs-list" class="logs">
          {shown.entries.map((e, i) => (
            <li key={i} data-level={e.level}>
              <time dateTime={e.timestamp}>{clock(e.timestamp)}</time> <span class={`level level-${e.level}`}>{e.level.toUpperCase()}</span> <span class="message">{e.message}</span>
              {e.fields && Object.keys(e.fields).length > 0 && (
                <span class="fields">
                  {' '}
                  {Object.entries(e.fields)
                    .map(([k, v]) => `${k}=${v}`)
                    .join(' ')}
                </span>
              )}
            </li>
          ))}
        </ol>
      </div>
    </div>
  );
}

// useFollowedLogs reads the newest page of the log, then, while follow
// is on, what came after it every few seconds.
function useFollowedLogs(client: Client, id: string, level: string, search: string, follow: boolean): Shown {
  const [shown, setShown] = useState<Shown>({ entries: [], error: '', loaded: false });
  const following = useRef(follow);
  following.current = follow;
  useEffect(() => {
    const stop = new AbortController();
    setShown({ entries: [], error: '', loaded: false });
    const path = `/v2/sandboxes/${enc(id)}/logs`;
    void (async () => {
      let all: LogEntry[] = [];
      let first = true;
      while (!stop.signal.aborted) {
        if (first || (following.current && !document.hidden)) {
          try {
            // The API answers newest first unless asked forward; a
            // cursor is inclusive, so the last millisecond comes again.
            const got = first
              ? (await logsOf(client, path, { limit: pageLimit, level, search })).reverse()
              : await logsOf(client, path, { limit: pageLimit, level, search, direction: 'forward', cursor: lastMillis(all) });
            if (stop.signal.aborted) return;
            all = append(all, got);
            first = false;
            setShown({ entries: all, error: '', loaded: true });
          } catch (e) {
            if (!stop.signal.aborted) setShown((s) => ({ ...s, error: messageOf(e) }));
          }
        }
        await sleep(followPollMs, stop.signal);
      }
    })();
    return () => stop.abort();
  }, [client, id, level, search]);
  return shown;
}

async function logsOf(c: Client, path: string, query: Record<string, string | number | undefined>): Promise<LogEntry[]> {
  return (await c.get<{ logs: LogEntry[] }>(path + q(query))).logs ?? [];
}

const millis = (e: LogEntry) => Date.parse(e.timestamp);

function lastMillis(all: LogEntry[]): number | undefined {
  return all.length ? millis(all[all.length - 1]) : undefined;
}

// append adds got to all, less the entries of all's last millisecond
// that the inclusive cursor returned again.
function append(all: LogEntry[], got: LogEntry[]): LogEntry[] {
  if (!got.length) return all;
  const last = lastMillis(all);
  const seen = new Set(all.filter((e) => millis(e) === last).map(keyOf));
  const fresh = got.filter((e) => millis(e) !== last || !seen.has(keyOf(e)));
  if (!fresh.length) return all;
  return [...all, ...fresh].slice(-maxShown);
}

const keyOf = (e: LogEntry) => `${e.timestamp}\n${e.level}\n${e.message}`;

function clock(iso: string): string {
  const d = new Date(iso);
  if (isNaN(d.getTime())) return iso;
  return `${d.toLocaleTimeString(undefined, { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}
