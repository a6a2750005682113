// The dashboard's one way to the control plane: its public REST and
// WebSocket API, with the signed-in credential. Nothing here is private
// to the dashboard; the CLI and the SDKs call the same routes.

// A credential is a team's API key, or the operator's admin token (which
// may act as one team, as E2B's X-Team-ID allows).
export interface Credential {
  kind: 'key' | 'admin';
  secret: string;
  team?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Sandbox {
  sandboxID: string;
  templateID: string;
  alias?: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  state: 'running' | 'paused' | string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  envdVersion: string;
  metadata: Record<string, string> | null;
}

export interface SandboxDetail extends Sandbox {
  domain: string;
  runtime?: string;
  paused?: string;
  pauseNote?: string;
  diskBytes?: number | null;
}

export interface Metric {
  timestampUnix: number;
  cpuUsedPct: number;
  cpuCount: number;
  memUsed: number;
  memTotal: number;
  diskUsed: number;
  diskTotal: number;
}

export interface Host {
  id: string;
  url?: string;
  runtime: string;
  status?: string;
  [k: string]: unknown;
}

export interface Template {
  templateID: string;
  aliases: string[] | null;
  names?: string[] | null;
  buildID: string;
  buildStatus?: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB?: number;
  public: boolean;
  createdAt: string;
  updatedAt?: string;
  spawnCount?: number;
}

export interface SandboxEvent {
  id: string;
  type: string;
  sandboxId: string;
  sandboxTemplateId: string;
  timestamp: string;
  eventData: Record<string, unknown> | null;
}

export interface FileEntry {
  name: string;
  path: string;
  type: string;
  size: number;
  mode?: number;
  permissions?: string;
  modifiedTime?: string;
  symlinkTarget?: string;
}

export interface Port {
  port: number;
  address?: string;
  [k: string]: unknown;
}

export interface ApiKey {
  id: string;
  name: string;
  mask?: { prefix: string; maskedValuePrefix?: string; maskedValueSuffix: string };
  createdAt: string;
  lastUsed?: string | null;
  createdBy?: { email?: string; id?: string } | null;
}

export interface CreatedKey extends ApiKey {
  key: string;
}

export interface Team {
  id: string;
  name: string;
  createdAt?: string;
  quota?: Record<string, number>;
  [k: string]: unknown;
}

export interface LogLine {
  timestamp: string;
  level?: string;
  message: string;
  line?: string;
}

export class Client {
  constructor(readonly cred: Credential) {}

  headers(extra?: HeadersInit): Headers {
    const h = new Headers(extra);
    if (this.cred.kind === 'key') {
      h.set('X-API-Key', this.cred.secret);
    } else {
      h.set('X-Admin-Token', this.cred.secret);
      if (this.cred.team) h.set('X-Team-ID', this.cred.team);
    }
    return h;
  }

  async raw(method: string, path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(path, { ...init, method, headers: this.headers(init.headers) });
    } catch (e) {
      throw new ApiError(0, `cannot reach roost: ${(e as Error).message}`);
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = {};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    const res = await this.raw(method, path, init);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  // events follows GET /v1/events (server-sent events over fetch, which,
  // unlike EventSource, can send the credential in a header) until
  // signal aborts, reconnecting with Last-Event-ID after a drop.
  async events(query: string, signal: AbortSignal, on: (e: SandboxEvent) => void): Promise<void> {
    let last = '';
    while (!signal.aborted) {
      try {
        const headers: HeadersInit = last ? { 'Last-Event-ID': last } : {};
        const res = await this.raw('GET', `/v1/events${query}`, { signal, headers });
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end: number;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const msg = parseFrame(frame);
            if (msg.id) last = msg.id;
            if (msg.data) on(JSON.parse(msg.data) as SandboxEvent);
          }
        }
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
      }
      await sleep(2000, signal);
    }
  }

  // webSocket opens one of the API's WebSockets. Browsers cannot set
  // headers on a WebSocket, so the credential travels as subprotocols
  // (roost.key.<key>, or roost.admin.<token> and roost.team.<team>) beside
  // "roost", the one the server selects: never in the URL, so never in a
  // log.
  webSocket(path: string): WebSocket {
    const url = new URL(path, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const c = this.cred;
    const protocols = ['roost'];
    if (c.kind === 'key') protocols.push(`roost.key.${c.secret}`);
    else {
      protocols.push(`roost.admin.${c.secret}`);
      if (c.team) protocols.push(`roost.team.${c.team}`);
    }
    const ws = new WebSocket(url, protocols);
    ws.binaryType = 'arraybuffer';
    return ws;
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  let message = text.trim() || res.statusText;
  try {
    const body = JSON.parse(text) as { message?: string };
    if (body.message) message = body.message;
  } catch {
    // not JSON: the text is the message
  }
  return new ApiError(res.status, message);
}

function parseFrame(frame: string): { id?: string; data?: string } {
  const msg: { id?: string; data?: string } = {};
  for (const line of frame.split('\n')) {
    if (line.startsWith('id:')) msg.id = line.slice(3).trim();
    else if (line.startsWith('data:')) msg.data = (msg.data ? msg.data + '\n' : '') + line.slice(5).trimStart();
  }
  return msg;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

// q encodes a query string from the pairs whose value is set.
export function q(params: Record<string, string | number | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;
