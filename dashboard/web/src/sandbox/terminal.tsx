// The terminal tab: xterm.js over the sandbox's PTY WebSocket. The
// terminal's pid is kept for the browser tab's session, so that coming
// back to the page reattaches to the same shell with its scrollback.
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import { Pty } from './pty';
import { copyText, useClient } from '../ui';

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
  const client = useClient();
  const box = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal | null>(null);
  const pty = useRef<Pty | null>(null);
  const newButton = useRef<HTMLButtonElement>(null);
  const [conn, setConn] = useState<Conn>({ kind: 'idle' });
  const [note, setNote] = useState('');
  // generation restarts the connection: "New terminal" and "Reconnect".
  const [generation, setGeneration] = useState(0);
  const focusOnStart = useRef(false);

  // The terminal itself lives as long as the tab; connections come and go.
  useEffect(() => {
    // The stylesheet's monospace fonts: xterm measures one cell and needs
    // every glyph that wide.
    const mono = getComputedStyle(document.documentElement).getPropertyValue('--mono').trim() || 'monospace';
    const t = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: mono });
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(box.current!);
    fit.fit();
    t.onData((d) => pty.current?.input(d));
    t.onBinary((d) => pty.current?.binaryInput(d));
    t.onResize(({ cols, rows }) => pty.current?.resize(cols, rows));
    let down: KeyboardEvent | null = null;
    t.attachCustomKeyEventHandler((ev) => {
      // A keypress after a keydown that xterm handled (and cancelled)
      // would type the key twice. Browsers send none, but synthetic
      // input does (DevTools' Input.dispatchKeyEvent, which browser
      // tests and remote-control tools use).
      if (ev.type === 'keypress') return !(down?.defaultPrevented && down.key === ev.key);
      if (ev.type === 'keydown') down = ev;
      if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
      const act = keys.current[ev.key.toLowerCase()];
      if (!act) return true;
      ev.preventDefault();
      act();
      return false;
    });
    term.current = t;
    // Fitting on every size change of the box (window, phone rotation,
    // layout) resizes the terminal, whose onResize tells the PTY.
    let frame = 0;
    const ro = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => fit.fit());
    });
    ro.observe(box.current!);
    return () => {
      cancelAnimationFrame(frame);
      ro.disconnect();
      t.dispose();
      term.current = null;
    };
  }, []);

  useEffect(() => {
    const t = term.current!;
    if (!running) {
      setConn({ kind: 'idle' });
      return;
    }
    let live = true;
    const connect = (pid: number | undefined) => {
      t.reset();
      setConn({ kind: 'connecting', pid });
      pty.current = new Pty(client, id, { pid, cols: t.cols, rows: t.rows }, {
        start(p) {
          sessionStorage.setItem(storageKey(id), String(p));
          setConn({ kind: 'open', pid: p });
          if (focusOnStart.current) t.focus();
          focusOnStart.current = false;
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
          if (!started && pid !== undefined) {
            // The kept terminal is gone (its shell exited, or the sandbox
            // was restarted): start another rather than show an error.
            sessionStorage.removeItem(storageKey(id));
            setNote(`Terminal ${pid} no longer exists; this is a new one.`);
            connect(undefined);
            return;
          }
          setConn({ kind: 'closed', text: closeText(code, reason, started) });
        },
      });
    };
    connect(storedPid(id));
    return () => {
      live = false;
      pty.current?.detach();
      pty.current = null;
    };
  }, [client, id, running, generation]);

  const say = (s: string) => setNote(s);
  const copy = async () => {
    const t = term.current;
    if (!t?.hasSelection()) return say('Select text in the terminal first.');
    const ok = (await copyText(t.getSelection())) || copyByCommand(t.getSelection());
    say(ok ? 'Copied the selection.' : 'The browser refused the clipboard: use its Copy menu instead.');
  };
  const paste = async () => {
    const t = term.current;
    if (!t) return;
    let text: string;
    try {
      text = await navigator.clipboard.readText();
    } catch {
      t.focus();
      return say('The browser refused to read the clipboard (it allows that only with your permission, on HTTPS or localhost): paste with its right-click menu or Shift+Insert.');
    }
    t.paste(text);
    t.focus();
    say('');
  };
  const shortcuts: Record<string, () => void> = {
    c: () => void copy(),
    v: () => void paste(),
    // Tab belongs to the shell, so the keyboard needs another way out.
    m: () => newButton.current?.focus(),
  };
  // The terminal's key handler, attached once, reads the latest.
  const keys = useRef(shortcuts);
  keys.current = shortcuts;

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

// closeText explains a socket that closed under the terminal. The
// server closes with 4000 + the HTTP status it would have answered;
// a refusal before the upgrade reaches the page as a bare 1006.
function closeText(code: number, reason: string, started: boolean): string {
  if (code >= 4000 && code < 5000) return `Disconnected: ${reason || 'error'} (${code - 4000})`;
  if (!started) return 'Could not open a terminal: the sandbox may be pausing, gone or unreachable.';
  if (code === 1000) return 'Disconnected.';
  return 'The connection dropped; the shell keeps running: Reconnect to reattach.';
}

// copyByCommand is the clipboard's older way, which browsers still allow
// on plain HTTP where navigator.clipboard is missing.
function copyByCommand(s: string): boolean {
  const ta = document.createElement('textarea');
  ta.value = s;
  ta.setAttribute('readonly', '');
  ta.style.position = 'fixed';
  ta.style.opacity = '0';
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}
