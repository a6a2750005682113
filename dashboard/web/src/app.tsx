// The dashboard's shell: sign-in, the navigation and the page the route
// names.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { Client, type Credential, type Team } from './api';
import { HostsPage } from './hosts';
import { KeysPage } from './keys';
import { href, useRoute } from './router';
import { SandboxesPage } from './sandboxes';
import { loadCredential, saveCredential } from './session';
import { SignIn } from './signin';
import { TeamsPage } from './teams';
import { TemplatesPage } from './templates';
import { ClientContext, ErrorNote, messageOf, useLoad } from './ui';

interface Signed {
  cred: Credential;
  teamName: string;
}

export function App() {
  const [signed, setSigned] = useState<Signed | null>(() => {
    const cred = loadCredential();
    return cred ? { cred, teamName: '' } : null;
  });
  const client = useMemo(() => (signed ? new Client(signed.cred) : null), [signed]);
  if (!signed || !client) {
    return (
      <SignIn
        onSignedIn={(cred, teamName) => {
          saveCredential(cred);
          setSigned({ cred, teamName });
          if (!location.hash) location.hash = '#/sandboxes';
        }}
      />
    );
  }
  const signOut = () => {
    saveCredential(null);
    setSigned(null);
  };
  const actAs = (team: string) => {
    const cred = { ...signed.cred, team: team || undefined };
    saveCredential(cred);
    setSigned({ cred, teamName: '' });
  };
  return (
    <ClientContext.Provider value={client}>
      <Shell cred={signed.cred} teamName={signed.teamName} onSignOut={signOut} onActAs={actAs} />
    </ClientContext.Provider>
  );
}

const pages: { id: string; title: string; admin?: boolean }[] = [
  { id: 'sandboxes', title: 'Sandboxes' },
  { id: 'templates', title: 'Templates' },
  { id: 'hosts', title: 'Hosts' },
  { id: 'keys', title: 'API keys' },
  { id: 'teams', title: 'Teams', admin: true },
];

function Shell({ cred, teamName, onSignOut, onActAs }: { cred: Credential; teamName: string; onSignOut: () => void; onActAs: (team: string) => void }) {
  const route = useRoute();
  const admin = cred.kind === 'admin';
  const current = route.page === 'sandbox' ? 'sandboxes' : route.page;
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <h1 class="brand">
          <a href={href('sandboxes')}>roost</a>
        </h1>
        <nav aria-label="Pages">
          <ul>
            {pages
              .filter((p) => !p.admin || admin)
              .map((p) => (
                <li key={p.id}>
                  <a href={href(p.id)} aria-current={current === p.id ? 'page' : undefined}>
                    {p.title}
                  </a>
                </li>
              ))}
          </ul>
        </nav>
        <div class="who">
          {admin ? <TeamPicker secret={cred.secret} team={cred.team ?? ''} onChange={onActAs} /> : teamName && <span class="muted">team {teamName}</span>}
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page cred={cred} page={route.page} args={route.args} />
      </main>
    </div>
  );
}

function Page({ cred, page, args }: { cred: Credential; page: string; args: string[] }) {
  const needsTeam = cred.kind === 'admin' && !cred.team && page !== 'teams' && page !== 'hosts';
  if (needsTeam) {
    return (
      <p class="panel">
        You are signed in as the operator. Choose a team to act as (at the top), or manage <a href={href('teams')}>teams</a>.
      </p>
    );
  }
  switch (page) {
    case 'sandboxes':
      return <SandboxesPage />;
    case 'sandbox':
      return <LazySandboxPage id={args[0] ?? ''} tab={args[1] ?? 'terminal'} />;
    case 'templates':
      return <TemplatesPage />;
    case 'hosts':
      return <HostsPage />;
    case 'keys':
      return <KeysPage />;
    case 'teams':
      return cred.kind === 'admin' ? <TeamsPage /> : <p class="panel">Teams are the operator's: sign in with the admin token.</p>;
    default:
      return (
        <p class="panel">
          No page {page}. Go to the <a href={href('sandboxes')}>sandboxes</a>.
        </p>
      );
  }
}

// TeamPicker lets the operator act as one team (E2B's X-Team-ID).
function TeamPicker({ secret, team, onChange }: { secret: string; team: string; onChange: (team: string) => void }) {
  const teams = useLoad(() => new Client({ kind: 'admin', secret }).get<Team[]>('/v1/teams'), [secret], 30000);
  return (
    <label class="inline">
      <span>Act as team</span>
      <select value={team} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        <option value="">— operator —</option>
        {(teams.data ?? []).map((t) => (
          <option key={t.id} value={t.id}>
            {t.name}
          </option>
        ))}
      </select>
    </label>
  );
}

type SandboxPageModule = typeof import('./sandbox/page');

// sandboxPage is the sandbox page's module, loaded at its first opening:
// it brings xterm.js and uPlot, most of the dashboard's JavaScript, which
// the first page need not wait for.
let sandboxPage: Promise<SandboxPageModule> | null = null;

function LazySandboxPage(props: { id: string; tab: string }) {
  const [mod, setMod] = useState<SandboxPageModule | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    sandboxPage ??= import('./sandbox/page');
    sandboxPage.then(setMod, (e) => {
      sandboxPage = null; // let a later opening try again
      setError(`The sandbox page did not load: ${messageOf(e)}`);
    });
  }, []);
  if (error) return <ErrorNote error={error} />;
  if (!mod) return <p class="muted">Loading…</p>;
  return <mod.SandboxPage {...props} />;
}
