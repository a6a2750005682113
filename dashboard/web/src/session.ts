// The signed-in credential lives in the tab's session storage: it
// survives a reload, not the tab, and no other origin (a sandbox's page
// among them) can read it.
import type { Credential } from './api';

const storageKey = 'roost.credential';

export function loadCredential(): Credential | null {
  try {
    const raw = sessionStorage.getItem(storageKey);
    return raw ? (JSON.parse(raw) as Credential) : null;
  } catch {
    return null;
  }
}

export function saveCredential(c: Credential | null): void {
  if (c) sessionStorage.setItem(storageKey, JSON.stringify(c));
  else sessionStorage.removeItem(storageKey);
}

// switchCredential keeps c (or signs out, for null) and reloads the page:
// for when an act made the credential in use invalid, so that nothing
// still holding it calls again.
export function switchCredential(c: Credential | null): void {
  saveCredential(c);
  location.reload();
}
