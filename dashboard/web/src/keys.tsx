// The API keys page: the team's keys (masked: the server keeps only
// their hashes), a new key shown the one time it can be, and revoking.
import { useEffect, useRef, useState } from 'preact/hooks';
import { type Credential, enc } from './api';
import { switchCredential } from './session';
import { ConfirmButton, copyText, ErrorNote, RowError, Section, time, useAction, useClient, useLoad } from './ui';

// KeyRow is one key of GET /api-keys (E2B's TeamAPIKey).
interface KeyRow {
  id: string;
  name: string;
  mask: { prefix: string; valueLength: number; maskedValuePrefix: string; maskedValueSuffix: string };
  createdAt: string;
  lastUsed: string | null;
}

interface NewKey extends KeyRow {
  key: string;
}

const masked = (k: KeyRow) => `${k.mask.prefix}${k.mask.maskedValuePrefix}…${k.mask.maskedValueSuffix}`;

// signedInWith says whether k is the key this tab signed in with: the
// mask shows its first and last characters, which is enough to warn.
function signedInWith(k: KeyRow, cred: Credential): boolean {
  const m = k.mask;
  return (
    cred.kind === 'key' &&
    cred.secret.startsWith(m.prefix + m.maskedValuePrefix) &&
    cred.secret.endsWith(m.maskedValueSuffix) &&
    (!m.valueLength || cred.secret.length === m.prefix.length + m.valueLength)
  );
}

export function KeysPage() {
  const client = useClient();
  const keys = useLoad(() => client.get<KeyRow[]>('/api-keys'), [client]);
  const [created, setCreated] = useState<NewKey | null>(null);
  const rows = keys.data ?? [];
  return (
    <Section title="API keys">
      <CreateKey
        onCreated={(k) => {
          setCreated(k);
          keys.reload();
        }}
      />
      {created && <SecretOnce title={`New API key “${created.name}”`} secret={created.key} onDone={() => setCreated(null)} />}
      <ErrorNote error={keys.error} />
      <p class="muted small" aria-live="polite">
        {keys.data ? `${rows.length} ${rows.length === 1 ? 'key' : 'keys'}` : 'Loading…'}
      </p>
      <div class="table-box" tabIndex={0} aria-label="API keys table">
        <table class="cards">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Key</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((k) => (
              <KeyItem key={k.id} k={k} only={rows.length === 1} onChanged={keys.reload} />
            ))}
          </tbody>
        </table>
        {keys.data && rows.length === 0 && <p class="empty">This team has no API keys. Create one above.</p>}
      </div>
    </Section>
  );
}

function CreateKey({ onCreated }: { onCreated: (k: NewKey) => void }) {
  const client = useClient();
  const [name, setName] = useState('');
  const [busy, error, run] = useAction();
  const submit = (ev: Event) => {
    ev.preventDefault();
    void run(async () => {
      const n = name.trim();
      if (!n) throw new Error('Name: give the key a name, such as where it will be used');
      if (new TextEncoder().encode(n).length > 128) throw new Error('Name: at most 128 bytes');
      onCreated(await client.call<NewKey>('POST', '/api-keys', { name: n }));
      setName('');
    });
  };
  return (
    <form class="filters" onSubmit={submit} aria-label="New API key">
      <label>
        <span>New key’s name</span>
        <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder="ci" maxLength={128} autocomplete="off" />
      </label>
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Creating…' : 'Create key'}
      </button>
      <ErrorNote error={error} />
    </form>
  );
}

function KeyItem({ k, only, onChanged }: { k: KeyRow; only: boolean; onChanged: () => void }) {
  const client = useClient();
  const [busy, error, run] = useAction();
  const mine = signedInWith(k, client.cred);
  const revoke = () =>
    run(async () => {
      await client.call('DELETE', `/api-keys/${enc(k.id)}`);
      if (mine) {
        // This tab's key is gone: every later call would be refused.
        switchCredential(null);
        return;
      }
      onChanged();
    });
  return (
    <>
      <tr>
        <th scope="row">
          {k.name}
          {mine && <span class="tag">signed in with this key</span>}
        </th>
        <td data-label="Key" class="mono">{masked(k)}</td>
        <td data-label="Created">{time(k.createdAt)}</td>
        <td data-label="Last used">{k.lastUsed ? time(k.lastUsed) : 'never'}</td>
        <td>
          <div class="row-actions">
            <ConfirmButton label="Revoke" confirmLabel={revokeWarning(mine, only)} disabled={busy} onConfirm={revoke} />
          </div>
        </td>
      </tr>
      <RowError error={error} columns={5} />
    </>
  );
}

// revokeWarning is the second press's label: it says what else is lost.
function revokeWarning(mine: boolean, only: boolean): string {
  if (only) return 'Really? The team’s last key: only the operator can make another';
  if (mine) return 'Really? This signs you out';
  return 'Really revoke?';
}

// SecretOnce shows a secret the server will not show again, with a way
// to copy it and a plain warning; it stays until dismissed.
export function SecretOnce({ title, secret, onDone }: { title: string; secret: string; onDone: () => void }) {
  const [note, setNote] = useState('');
  const code = useRef<HTMLElement>(null);
  const copyButton = useRef<HTMLButtonElement>(null);
  // Focus moves to the secret's box so that a keyboard or screen reader
  // user lands on it, not past it.
  useEffect(() => copyButton.current?.focus(), []);
  const copy = async () => {
    if (await copyText(secret)) {
      setNote('Copied.');
      return;
    }
    // No clipboard (a page served over plain HTTP from elsewhere than
    // localhost): select it for the reader to copy.
    const sel = getSelection();
    if (sel && code.current) sel.selectAllChildren(code.current);
    setNote('This page may not use the clipboard: the key is selected, copy it with Ctrl+C (⌘C).');
  };
  return (
    <section class="secret-once" role="region" aria-labelledby="secret-title">
      <h3 id="secret-title">{title}</h3>
      <p>
        <strong>Copy it now: it will not be shown again.</strong> roost keeps only its hash.
      </p>
      <p class="secret-line">
        <code ref={code}>{secret}</code>
        <button type="button" onClick={copy} ref={copyButton}>
          Copy
        </button>
      </p>
      <p class="small" aria-live="polite">
        {note}
      </p>
      <button type="button" onClick={onDone}>
        I have saved it
      </button>
    </section>
  );
}
