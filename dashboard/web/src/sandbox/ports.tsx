// The ports tab: the TCP servers listening in the sandbox, each with its
// two addresses through roost's proxy.
import { enc, type Port, type SandboxDetail } from '../api';
import { ErrorNote, useClient, useLoad } from '../ui';

const portsPollMs = 3000;

// envdPort is where envd, roost's agent in every sandbox (E2B's), listens.
const envdPort = 49983;

// subdomainURL is the port's own origin, {port}-{id}.{domain}, on the
// scheme and port this page came from (the proxy shares the listener).
function subdomainURL(sb: SandboxDetail, port: number): string {
  return `${location.protocol}//${port}-${sb.sandboxID}.${sb.domain}${location.port ? ':' + location.port : ''}/`;
}

// pathURL is the path form, for when the domain's names do not resolve
// (no wildcard DNS): the page is served on this origin under a sandbox
// policy, so it cannot reach the dashboard's credential.
const pathURL = (sb: SandboxDetail, port: number) => `/proxy/${sb.sandboxID}/${port}/`;

export function PortsTab({ sb }: { sb: SandboxDetail }) {
  const client = useClient();
  const ports = useLoad(() => client.get<Port[]>(`/v1/sandboxes/${enc(sb.sandboxID)}/ports`), [client, sb.sandboxID], portsPollMs);
  const list = [...(ports.data ?? [])].sort((a, b) => a.port - b.port);
  return (
    <div class="ports-tab">
      <ErrorNote error={ports.error} />
      <p class="muted small" aria-live="polite">
        {!ports.data ? 'Reading…' : list.length ? `${list.length} listening ${list.length === 1 ? 'port' : 'ports'}, refreshed every few seconds.` : ''}
      </p>
      {ports.data && list.length === 0 && (
        <p class="empty">
          Nothing listens in the sandbox yet. Start a server in the terminal, e.g. <code>python3 -m http.server 8000</code>.
        </p>
      )}
      <ul id="ports-list" class="ports">
        {list.map((p) => (
          <li key={`${p.address}:${p.port}`} data-port-item={p.port}>
            <span class="port-number mono">{p.port}</span>
            <span class="muted small">
              on {p.address || 'all addresses'}
              {p.forwarded ? ' (loopback, forwarded)' : ''}
              {p.port === envdPort ? ': envd, the sandbox agent the API talks to' : ''}
            </span>
            <span class="port-link">
              <span class="muted small">Own address: </span>
              <a href={subdomainURL(sb, p.port)} data-port={p.port} target="_blank" rel="noopener noreferrer">
                {subdomainURL(sb, p.port)}
              </a>
            </span>
            <span class="port-link">
              <span class="muted small">Path: </span>
              <a href={pathURL(sb, p.port)} data-port-path={p.port} target="_blank" rel="noopener noreferrer">
                {location.origin + pathURL(sb, p.port)}
              </a>
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
}
