// Sign in with a team's API key or the operator's admin token. The key is
// checked against the API before it is kept, so a wrong one is refused
// here, with the server's reason.
import { useState } from 'preact/hooks';
import { ApiError, Client, type Credential } from './api';
import { ErrorNote, messageOf } from './ui';

interface TeamInfo {
  teamID: string;
  name: string;
}

// signIn finds out what secret is: a team's key (GET /teams answers with
// its team) or else an admin token (GET /v1/teams answers).
export async function signIn(secret: string): Promise<{ cred: Credential; teamName: string }> {
  const key: Credential = { kind: 'key', secret };
  try {
    const teams = await new Client(key).get<TeamInfo[]>('/teams');
    return { cred: key, teamName: teams[0]?.name ?? '' };
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    const admin: Credential = { kind: 'admin', secret };
    try {
      await new Client(admin).get('/v1/teams');
      return { cred: admin, teamName: '' };
    } catch (e2) {
      if (e2 instanceof ApiError && e2.status === 401) {
        throw new ApiError(401, `roost refused this key: ${e.message}`);
      }
      throw e2;
    }
  }
}

export function SignIn({ onSignedIn }: { onSignedIn: (c: Credential, teamName: string) => void }) {
  const [secret, setSecret] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (ev: Event) => {
    ev.preventDefault();
    const s = secret.trim();
    if (!s) {
      setError('Enter an API key (e2b_…) or the admin token.');
      return;
    }
    setBusy(true);
    setError('');
    try {
      const { cred, teamName } = await signIn(s);
      onSignedIn(cred, teamName);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <form onSubmit={submit} class="panel" aria-labelledby="signin-title">
        <h1 id="signin-title">roost</h1>
        <p>
          Sign in with an API key. <code>roost up</code> printed one at its first start and keeps it in{' '}
          <code>&lt;data-dir&gt;/api-key</code>; the operator's admin token is in <code>&lt;data-dir&gt;/admin-token</code>.
        </p>
        <label for="secret">API key or admin token</label>
        <input
          id="secret"
          name="secret"
          type="password"
          autocomplete="off"
          spellcheck={false}
          value={secret}
          onInput={(e) => setSecret((e.target as HTMLInputElement).value)}
          autofocus
        />
        <ErrorNote error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p class="muted small">The key stays in this tab's session storage and goes only to this server.</p>
      </form>
    </main>
  );
}
