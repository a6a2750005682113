// A small text file's view and editor: read whole, edited in a textarea,
// written back whole. Binary and large files are refused with a note.
import { useEffect, useRef, useState } from 'preact/hooks';
import { type FileEntry } from '../api';
import { bytes, ErrorNote, messageOf, useAction, useClient } from '../ui';
import { readFile, saveBlob, writeFile } from './fileapi';

// maxEdit is the largest file shown: a textarea beyond it is slow, and
// the file is read whole.
const maxEdit = 1 << 20;

type Loaded = { kind: 'loading' } | { kind: 'text'; text: string } | { kind: 'refused'; why: string } | { kind: 'error'; error: string };

export function FileView({ id, entry, onClose, onSaved }: { id: string; entry: FileEntry; onClose: () => void; onSaved: () => void }) {
  const client = useClient();
  const [loaded, setLoaded] = useState<Loaded>({ kind: 'loading' });
  const [text, setText] = useState('');
  const [saved, setSaved] = useState('');
  const [busy, error, run] = useAction();
  const title = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    title.current?.focus();
    if (entry.size > maxEdit) {
      setLoaded({ kind: 'refused', why: `It is ${bytes(entry.size)}: files up to ${bytes(maxEdit)} are shown here. Download it instead.` });
      return;
    }
    let live = true;
    setLoaded({ kind: 'loading' });
    readFile(client, id, entry.path)
      .then(async (blob) => {
        const got = await textOf(blob);
        if (!live) return;
        setLoaded(got);
        if (got.kind === 'text') setText(got.text);
      })
      .catch((e) => live && setLoaded({ kind: 'error', error: messageOf(e) }));
    return () => {
      live = false;
    };
  }, [client, id, entry.path]);

  const dirty = loaded.kind === 'text' && text !== loaded.text;
  const save = () =>
    run(async () => {
      await writeFile(client, id, entry.path, text);
      setLoaded({ kind: 'text', text });
      setSaved(`Saved at ${new Date().toLocaleTimeString()}.`);
      onSaved();
    });
  const download = () => run(async () => saveBlob(await readFile(client, id, entry.path), entry.name));

  return (
    <section id="file-view" class="file-view" aria-labelledby="file-view-title">
      <header class="panel-head">
        <h3 id="file-view-title" class="mono" tabIndex={-1} ref={title}>
          {entry.path}
        </h3>
        <div class="actions">
          {loaded.kind === 'text' && (
            <button type="button" id="file-save" class="primary" disabled={busy || !dirty} onClick={save}>
              {busy ? 'Saving…' : 'Save'}
            </button>
          )}
          <button type="button" disabled={busy} onClick={download}>
            Download
          </button>
          <button type="button" id="file-close" onClick={onClose}>
            Close
          </button>
        </div>
      </header>
      {loaded.kind === 'loading' && <p class="muted">Reading…</p>}
      {loaded.kind === 'refused' && <p class="note">{loaded.why}</p>}
      {loaded.kind === 'error' && <ErrorNote error={`Cannot read it: ${loaded.error}`} />}
      {loaded.kind === 'text' && (
        <label>
          <span>
            Contents{dirty ? ' (changed, not saved)' : ''} — Ctrl+S saves
          </span>
          <textarea
            id="file-text"
            rows={18}
            spellcheck={false}
            value={text}
            onInput={(e) => {
              setText((e.target as HTMLTextAreaElement).value);
              setSaved('');
            }}
            onKeyDown={(e) => {
              if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 's') {
                e.preventDefault();
                if (dirty) void save();
              }
            }}
          />
        </label>
      )}
      <ErrorNote error={error} />
      {saved && (
        <p class="ok small" role="status">
          {saved}
        </p>
      )}
    </section>
  );
}

// textOf decodes blob as UTF-8 text, refusing what is not: a NUL byte or
// an invalid sequence says binary.
async function textOf(blob: Blob): Promise<Loaded> {
  if (blob.size > maxEdit) return { kind: 'refused', why: `It is ${bytes(blob.size)} now: files up to ${bytes(maxEdit)} are shown here. Download it instead.` };
  const buf = new Uint8Array(await blob.arrayBuffer());
  if (buf.includes(0)) return { kind: 'refused', why: 'It looks binary (it holds NUL bytes), so it is not shown as text. Download it instead.' };
  try {
    return { kind: 'text', text: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf) };
  } catch {
    return { kind: 'refused', why: 'It is not UTF-8 text, so it is not shown here. Download it instead.' };
  }
}
