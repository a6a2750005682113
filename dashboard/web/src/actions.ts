// What a user can do to a sandbox, from its row or its page: E2B's routes.
import type { Client } from './api';
import { enc } from './api';

export const pauseSandbox = (c: Client, id: string) => c.call('POST', `/sandboxes/${enc(id)}/pause`);

// resumeSandbox resumes a paused sandbox (E2B's connect), giving it
// timeoutS seconds from now.
export const resumeSandbox = (c: Client, id: string, timeoutS = 300) => c.call('POST', `/sandboxes/${enc(id)}/connect`, { timeout: timeoutS });

export const killSandbox = (c: Client, id: string) => c.call('DELETE', `/sandboxes/${enc(id)}`);

// extendSeconds is what "+5 min" adds to a sandbox's time left.
export const extendSeconds = 300;

// extendSandbox adds extendSeconds to the time the sandbox has left
// (E2B's timeout route sets the time from now, so it is sent the sum).
export function extendSandbox(c: Client, id: string, endAt: string): Promise<unknown> {
  const left = Math.max(0, Math.round((new Date(endAt).getTime() - Date.now()) / 1000));
  return c.call('POST', `/sandboxes/${enc(id)}/timeout`, { timeout: left + extendSeconds });
}

// parsePairs reads "k=v" lines (or comma-separated pairs) into a map;
// a pair without "=" is an error naming it.
export function parsePairs(text: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/[\n,]/)) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${what}: "${line}" is not key=value`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}
