// The terminal's copy and paste: each returns what to tell the user, as
// browsers refuse the clipboard in several ways (plain HTTP, no
// permission, no user gesture).
import type { Terminal } from '@xterm/xterm';
import { copyText } from '../ui';

export async function copySelection(t: Terminal): Promise<string> {
  if (!t.hasSelection()) return 'Select text in the terminal first.';
  const text = t.getSelection();
  const ok = (await copyText(text)) || copyByCommand(text);
  return ok ? 'Copied the selection.' : 'The browser refused the clipboard: use its Copy menu instead.';
}

export async function pasteInto(t: Terminal): Promise<string> {
  let text: string;
  try {
    text = await navigator.clipboard.readText();
  } catch {
    return 'The browser refused to read the clipboard (it allows that only with your permission, on HTTPS or localhost): paste with its right-click menu or Shift+Insert.';
  } finally {
    t.focus();
  }
  t.paste(text);
  return '';
}

// copyByCommand is the clipboard's older way, which browsers still allow
// on plain HTTP, where navigator.clipboard is missing.
function copyByCommand(s: string): boolean {
  const was = document.activeElement as HTMLElement | null;
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
  was?.focus();
  return ok;
}
