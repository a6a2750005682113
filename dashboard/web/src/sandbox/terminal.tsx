// The terminal tab: xterm.js over the sandbox's PTY WebSocket. The
// terminal's pid is kept for the browser tab's session, so that coming
// back to the page reattaches to the same shell with its scrollback.
import type { Terminal } from '@xterm/xterm';
import type { RefObject } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Client } from '../api';
import { useClient } from '../ui';
import { copySelection, pasteInto } from './clipboard';
import { Pty, refusal } from './pty';
import { useXterm, type Wiring } from './xterm';

type Conn =
  | { kind: 'idle' }
  | { kind: 'connecting'; pid?: number }
  | { kind: 'open'; pid: number }
  | { kind: 'ended'; text: string }
  | { kind: 'closed'; text: string };

const storageKey = (id: string) => `roost.pty.${id}`;

function storedPid(id: string): number | undefined {
  const n = Number(sessionStorage.getItem(storageKey(id)));
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

export function TerminalTab({ id, running }: { id: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const pty = useRef<Pty | null>(null);
  const newButton = useRef<HTMLButtonElement>(null);
  const [note, setNote] = useState('');
  // generation restarts the connection: "New terminal" and "Reconnect".
  const [generation, setGeneration] = useState(0);
  const focusOnStart = useRef(false);

  const copy = async () => term.current && setNote(await copySelection(term.current));
  const paste = async () => term.current && setNote(await pasteInto(term.current));
  const shortcuts: Record<string, () => void> = {
    c: () => void copy(),
    v: () => void paste(),
    // Tab belongs to the shell, so the keyboard needs another way out.
    m: () => newButton.current?.focus(),
  };
  const wiring = useRef<Wiring>(null);
  wiring.current = {
    data: (d) => pty.current?.input(d),
    binary: (d) => pty.current?.binaryInput(d),
    resize: (cols, rows) => pty.current?.resize(cols, rows),
    shortcut: (key) => {
      const act = shortcuts[key];
      act?.();
      return act !== undefined;
    },
  };
  const term = useXterm(box, wiring);
  const conn = usePtySession(useClient(), id, running, generation, { term, pty, focusOnStart, setNote });

  const restart = (fresh: boolean) => {
    if (fresh) sessionStorage.removeItem(storageKey(id));
    setNote('');
    focusOnStart.current = true;
    setGeneration((g) => g + 1);
  };

  return (
    <div class="terminal-tab">
      <div class="toolbar">
        <button type="button" id="terminal-new" ref={newButton} disabled={!running} onClick={() => restart(true)} title="Start another shell; the current one keeps running">
          New terminal
        </button>
        {conn.kind === 'closed' && (
          <button type="button" id="terminal-reconnect" onClick={() => restart(false)}>
            Reconnect
          </button>
        )}
        <button type="button" id="terminal-copy" onClick={() => void copy()} title="Copy the selection (Ctrl+Shift+C)">
          Copy
        </button>
        <button type="button" id="terminal-paste" onClick={() => void paste()} disabled={conn.kind !== 'open'} title="Paste the clipboard (Ctrl+Shift+V)">
          Paste
        </button>
        <span id="terminal-status" class={`conn conn-${conn.kind}`} role="status">
          {connText(conn, running)}
        </span>
      </div>
      {note && (
        <p class="muted small" role="status">
          {note}
        </p>
      )}
      <div id="terminal" ref={box} aria-label="Terminal" />
      <p class="muted small">
        Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes. Tab goes to the shell; Ctrl+Shift+M moves the focus out of the terminal, to these buttons.
      </p>
    </div>
  );
}

interface SessionParts {
  term: RefObject<Terminal | null>;
  // pty is the connection the terminal's input goes to.
  pty: RefObject<Pty | null>;
  focusOnStart: RefObject<boolean>;
  setNote: (s: string) => void;
}

// usePtySession connects the terminal to the sandbox's PTY while the
// sandbox runs: to the kept pid, or a new shell when there is none or it
// is gone. generation changing connects again.
function usePtySession(client: Client, id: string, running: boolean, generation: number, parts: SessionParts): Conn {
  const [conn, setConn] = useState<Conn>({ kind: 'idle' });
  useEffect(() => {
    const t = parts.term.current!;
    if (!running) {
      setConn({ kind: 'idle' });
      return;
    }
    let live = true;
    // When a going-away close last reattached on its own: one more
    // within reattachEvery waits for Reconnect instead of looping.
    let reattached = -Infinity;
    const connect = (pid: number | undefined) => {
      t.reset(); // a reattach's scrollback draws the screen again
      setConn({ kind: 'connecting', pid });
      parts.pty.current = new Pty(client, id, { pid, cols: t.cols, rows: t.rows }, {
        start(p) {
          sessionStorage.setItem(storageKey(id), String(p));
          setConn({ kind: 'open', pid: p });
          if (parts.focusOnStart.current) t.focus();
          parts.focusOnStart.current = false;
        },
        output: (d) => t.write(d),
        end(e) {
          sessionStorage.removeItem(storageKey(id));
          const text = `The shell ended${e.exitCode !== undefined ? ` (exit code ${e.exitCode})` : ''}${e.error ? `: ${e.error}` : ''}.`;
          t.write(`\r\n[${text}]\r\n`);
          setConn({ kind: 'ended', text });
        },
        closed(code, reason, started) {
          if (!live) return;
          const kept = storedPid(id);
          if (started && code === goingAway && kept !== undefined && Date.now() - reattached > reattachEvery) {
            // The server (a replica of the control plane) is shutting
            // down; the shell runs on, and the reattach reaches another.
            reattached = Date.now();
            parts.setNote(`The server went away${reason ? ` (${reason})` : ''}; reattached to terminal ${kept}.`);
            connect(kept);
            return;
          }
          if (started || code !== 1006) {
            setConn({ kind: 'closed', text: closeText(code, reason) });
            return;
          }
          void refusal(client, id, pid).then((r) => {
            if (!live) return;
            if (!r.gone) {
              setConn({ kind: 'closed', text: `Could not open the terminal: ${r.text}.` });
              return;
            }
            // The kept terminal is gone (its shell exited, or the sandbox
            // was restarted): start another, no error.
            sessionStorage.removeItem(storageKey(id));
            parts.setNote(`Terminal ${pid} no longer exists; this is a new one.`);
            connect(undefined);
          });
        },
      });
    };
    connect(storedPid(id));
    return () => {
      live = false;
      parts.pty.current?.detach();
      parts.pty.current = null;
    };
  }, [client, id, running, generation]);
  return conn;
}

function connText(c: Conn, running: boolean): string {
  switch (c.kind) {
    case 'idle':
      return running ? 'Not connected' : 'Not connected: the sandbox is not running';
    case 'connecting':
      return c.pid ? `Reattaching to terminal ${c.pid}…` : 'Starting a terminal…';
    case 'open':
      return `Connected (terminal ${c.pid})`;
    case 'ended':
    case 'closed':
      return c.text;
  }
}

// goingAway is the close code of a server that shuts down (a replica of
// the control plane stopping): the terminal reattaches on its own.
const goingAway = 1001;
const reattachEvery = 10_000; // ms

// closeText explains a socket that closed under the terminal: the
// server closes with 4000 + the HTTP status it would have answered.
function closeText(code: number, reason: string): string {
  if (code >= 4000 && code < 5000) return `Disconnected: ${reason || 'error'} (${code - 4000})`;
  if (code === 1000) return 'Disconnected.';
  if (code === goingAway) return 'The server went away again; the shell keeps running: Reconnect to reattach.';
  return 'The connection dropped; the shell keeps running: Reconnect to reattach.';
}
