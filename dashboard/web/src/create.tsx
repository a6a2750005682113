// The create form: E2B's POST /sandboxes with roost's resource settings.
import { useState } from 'preact/hooks';
import { type Template } from './api';
import { parsePairs } from './actions';
import { FormEnd, useAction, useClient, useLoad } from './ui';

interface Created {
  sandboxID: string;
}

export function CreateSandbox({ onClose, onCreated }: { onClose: () => void; onCreated: (id: string) => void }) {
  const client = useClient();
  const templates = useLoad(() => client.get<Template[]>('/templates'), [client]);
  const [form, setForm] = useState({ template: 'base', timeout: '300', cpu: '', memory: '', metadata: '', env: '', internet: true, autoPause: false });
  const [busy, error, run] = useAction();
  const set = (k: keyof typeof form) => (e: Event) => {
    const el = e.target as HTMLInputElement;
    setForm({ ...form, [k]: el.type === 'checkbox' ? el.checked : el.value });
  };
  const submit = (ev: Event) => {
    ev.preventDefault();
    void run(async () => {
      const body: Record<string, unknown> = {
        templateID: form.template.trim(),
        timeout: whole(form.timeout, 'Timeout'),
        metadata: parsePairs(form.metadata, 'Metadata'),
        envVars: parsePairs(form.env, 'Environment'),
        allow_internet_access: form.internet,
        autoPause: form.autoPause,
      };
      if (form.cpu) body.cpuCount = whole(form.cpu, 'CPUs');
      if (form.memory) body.memoryMB = whole(form.memory, 'Memory');
      const sb = await client.call<Created>('POST', '/sandboxes', body);
      onCreated(sb.sandboxID);
    });
  };
  const names = (templates.data ?? []).flatMap((t) => (t.aliases?.length ? t.aliases : [t.templateID]));
  return (
    <form class="create" onSubmit={submit} aria-labelledby="create-title">
      <h3 id="create-title">New sandbox</h3>
      <div class="grid">
        <label>
          <span>Template</span>
          <input list="template-names" value={form.template} onInput={set('template')} required />
          <datalist id="template-names">
            {names.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
        </label>
        <label>
          <span>Timeout (seconds)</span>
          <input inputMode="numeric" value={form.timeout} onInput={set('timeout')} />
        </label>
        <label>
          <span>CPUs</span>
          <input inputMode="numeric" placeholder="template's" value={form.cpu} onInput={set('cpu')} />
        </label>
        <label>
          <span>Memory (MiB)</span>
          <input inputMode="numeric" placeholder="template's" value={form.memory} onInput={set('memory')} />
        </label>
        <label class="wide">
          <span>Metadata (key=value, one a line)</span>
          <textarea rows={2} value={form.metadata} onInput={set('metadata')} />
        </label>
        <label class="wide">
          <span>Environment variables (KEY=value, one a line)</span>
          <textarea rows={2} value={form.env} onInput={set('env')} />
        </label>
        <label class="check">
          <input type="checkbox" checked={form.internet} onChange={set('internet')} />
          <span>Internet access</span>
        </label>
        <label class="check">
          <input type="checkbox" checked={form.autoPause} onChange={set('autoPause')} />
          <span>Pause instead of kill at timeout</span>
        </label>
      </div>
      <FormEnd error={error} busy={busy} label="Create" busyLabel="Creating…" onCancel={onClose} />
    </form>
  );
}

function whole(s: string, what: string): number {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${what}: "${s}" is not a positive whole number`);
  return n;
}
