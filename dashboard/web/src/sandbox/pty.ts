// One terminal session over GET /v1/sandboxes/{id}/pty (the protocol is
// described at the top of controlplane/v1ws.go): binary frames carry
// bytes behind a channel byte, text frames JSON control messages.
import { ApiError, type Client, enc, q, type SandboxDetail } from '../api';

const chanStdin = 0;
const chanStdout = 1;
const chanStderr = 2;

export interface PtyEnd {
  exitCode?: number;
  status?: string;
  error?: string;
}

export interface PtyHandlers {
  // start: the process is attached; pid names it for a later reattach.
  start(pid: number): void;
  output(data: Uint8Array): void;
  end(end: PtyEnd): void;
  // closed: the socket closed without an end or a detach. started says
  // whether start came first; code and reason are the close frame's
  // (1006 and "" when the browser was refused before the upgrade, which
  // it does not explain).
  closed(code: number, reason: string, started: boolean): void;
}

export interface PtyOptions {
  cols: number;
  rows: number;
  // pid reattaches to a running terminal; its scrollback arrives first.
  pid?: number;
}

const encoder = new TextEncoder();

const ptyPath = (sandboxID: string, opts: Partial<PtyOptions>) => `/v1/sandboxes/${enc(sandboxID)}/pty${q({ pid: opts.pid, cols: opts.cols, rows: opts.rows })}`;

// Pty is one WebSocket to one terminal. Closing it (detach) leaves the
// process running; kill ends it.
export class Pty {
  private readonly ws: WebSocket;
  private started = false;
  private detached = false;
  private ended = false;

  constructor(client: Client, sandboxID: string, opts: PtyOptions, private readonly on: PtyHandlers) {
    this.ws = client.webSocket(ptyPath(sandboxID, opts));
    this.ws.onmessage = (ev) => this.message(ev);
    this.ws.onclose = (ev) => {
      if (!this.detached && !this.ended) this.on.closed(ev.code, ev.reason, this.started);
    };
  }

  private message(ev: MessageEvent) {
    if (typeof ev.data === 'string') {
      const m = JSON.parse(ev.data) as { type: string; pid?: number } & PtyEnd;
      if (m.type === 'start' && m.pid) {
        this.started = true;
        this.on.start(m.pid);
      } else if (m.type === 'end') {
        this.ended = true;
        this.on.end(m);
      }
      return;
    }
    const frame = new Uint8Array(ev.data as ArrayBuffer);
    if (frame.length > 1 && (frame[0] === chanStdout || frame[0] === chanStderr)) this.on.output(frame.subarray(1));
  }

  get open(): boolean {
    return this.started && this.ws.readyState === WebSocket.OPEN;
  }

  // input sends what the user typed or pasted (xterm's onData: UTF-8
  // text).
  input(text: string) {
    this.sendBytes(encoder.encode(text));
  }

  // binaryInput sends xterm's onBinary: a string of bytes, one a char.
  binaryInput(s: string) {
    this.sendBytes(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff));
  }

  private sendBytes(b: Uint8Array) {
    if (!this.open || !b.length) return;
    const frame = new Uint8Array(b.length + 1);
    frame[0] = chanStdin;
    frame.set(b, 1);
    this.ws.send(frame);
  }

  resize(cols: number, rows: number) {
    if (this.open) this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
  }

  kill() {
    if (this.open) this.ws.send(JSON.stringify({ type: 'kill' }));
  }

  // detach closes the socket; the process keeps running for a reattach.
  detach() {
    this.detached = true;
    this.ws.close(1000);
  }
}

export interface Refusal {
  // gone: the terminal pid names no longer exists.
  gone: boolean;
  text: string;
}

// refusal finds out why the server refused a socket before the upgrade,
// which a browser reports as a bare 1006. A reattach asks the same route
// over plain HTTP, which answers the REST API's status (it attaches and
// detaches, harmlessly, when nothing is wrong); a new terminal is not
// asked again, as that would start a shell, so the sandbox's state
// stands for the reason.
export async function refusal(client: Client, sandboxID: string, pid?: number): Promise<Refusal> {
  try {
    if (pid !== undefined) {
      await client.raw('GET', ptyPath(sandboxID, { pid }));
    } else {
      const sb = await client.get<SandboxDetail>(`/v1/sandboxes/${enc(sandboxID)}`);
      if (sb.state !== 'running') return { gone: false, text: `the sandbox is ${sb.state}` };
    }
  } catch (e) {
    if (e instanceof ApiError) {
      if (pid !== undefined && e.status === 404) return { gone: true, text: e.message };
      // The route's own answer to a request that is not a WebSocket.
      if (e.status !== 426 && e.status !== 400) return { gone: false, text: `${e.message} (${e.status})` };
    }
  }
  return { gone: false, text: 'the server refused it, and the browser does not say why' };
}
