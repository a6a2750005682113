// useXterm keeps an xterm.js terminal in a box for a component's life,
// sized to the box, passing what the user types to its wiring.
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import type { RefObject } from 'preact';
import { useEffect, useRef } from 'preact/hooks';

export interface Wiring {
  // data is what the user typed or pasted, as xterm's onData (UTF-8
  // text) or onBinary (one byte a char).
  data(text: string): void;
  binary(bytes: string): void;
  // resize follows the box: the terminal's new size in cells.
  resize(cols: number, rows: number): void;
  // shortcut handles Ctrl+Shift+key, returning whether it did; the
  // terminal then does not see the key.
  shortcut(key: string): boolean;
}

// wiring is read at each event, so it may change on every render.
export function useXterm(box: RefObject<HTMLDivElement | null>, wiring: RefObject<Wiring | null>): RefObject<Terminal | null> {
  const term = useRef<Terminal | null>(null);
  useEffect(() => {
    const el = box.current!;
    // The stylesheet's monospace fonts: xterm measures one cell and needs
    // every glyph that wide.
    const mono = getComputedStyle(document.documentElement).getPropertyValue('--mono').trim() || 'monospace';
    const t = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: mono });
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(el);
    fit.fit();
    t.onData((d) => wiring.current?.data(d));
    t.onBinary((d) => wiring.current?.binary(d));
    t.onResize(({ cols, rows }) => wiring.current?.resize(cols, rows));
    t.attachCustomKeyEventHandler(keyFilter((key) => wiring.current?.shortcut(key) ?? false));
    term.current = t;
    // Fitting on every size change of the box (window, phone rotation,
    // layout) resizes the terminal, whose onResize tells the PTY.
    let frame = 0;
    const ro = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => fit.fit());
    });
    ro.observe(el);
    return () => {
      cancelAnimationFrame(frame);
      ro.disconnect();
      t.dispose();
      term.current = null;
    };
  }, []);
  return term;
}

// keyFilter is the terminal's key handler (false: xterm ignores the
// event): Ctrl+Shift shortcuts, and no key typed twice.
function keyFilter(shortcut: (key: string) => boolean): (ev: KeyboardEvent) => boolean {
  let down: KeyboardEvent | null = null;
  return (ev) => {
    // A keypress after a keydown that xterm handled (and cancelled)
    // would type the key twice. Browsers send none, but synthetic input
    // does (DevTools' Input.dispatchKeyEvent, which browser tests and
    // remote-control tools use).
    if (ev.type === 'keypress') return !(down?.defaultPrevented && down.key === ev.key);
    if (ev.type !== 'keydown') return true;
    down = ev;
    if (!ev.ctrlKey || !ev.shiftKey || !shortcut(ev.key.toLowerCase())) return true;
    ev.preventDefault();
    return false;
  };
}
