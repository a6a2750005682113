// The files tab: a browser of the sandbox's filesystem, one directory at
// a time, with uploads (dropped or chosen), downloads, and small text
// files viewed and edited in place.
import { useMemo, useRef, useState } from 'preact/hooks';
import { type FileEntry } from '../api';
import { bytes, ErrorNote, time, useAction, useClient, useLoad } from '../ui';
import { FileView } from './editor';
import { joinPath, listDir, parentOf, readFile, saveBlob, uploadFile } from './fileapi';

// startDir is E2B's home of the default user, where its SDKs work.
const startDir = '/home/user';

// The folder shown is kept per sandbox for the browser tab's session.
const dirKey = (id: string) => `roost.files.${id}`;

export function FilesTab({ id }: { id: string }) {
  const client = useClient();
  const [dir, setDir] = useState(() => sessionStorage.getItem(dirKey(id)) || startDir);
  const [input, setInput] = useState(dir);
  const [open, setOpen] = useState<FileEntry | null>(null);
  // The listing names its folder: while another loads, the last one's
  // rows are not shown as the new folder's.
  const list = useLoad(async () => ({ dir, entries: await listDir(client, id, dir) }), [client, id, dir]);
  const shown = list.data?.dir === dir ? list.data : undefined;
  const rows = useMemo(() => sortEntries(shown?.entries ?? []), [shown]);
  const [busy, error, run] = useAction();

  const go = (path: string) => {
    const p = path.trim() || '/';
    setDir(p);
    setInput(p);
    setOpen(null);
    sessionStorage.setItem(dirKey(id), p);
  };
  const download = (e: FileEntry) => run(async () => saveBlob(await readFile(client, id, e.path), e.name));

  return (
    <div class="files-tab">
      <form
        class="path-bar"
        onSubmit={(ev) => {
          ev.preventDefault();
          go(input);
        }}
      >
        <button type="button" onClick={() => go(parentOf(dir))} disabled={dir === '/'} title="The folder above">
          Up
        </button>
        <label class="grow">
          <span>Folder</span>
          <input id="files-path" class="mono" value={input} spellcheck={false} onInput={(e) => setInput((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Go</button>
        <button type="button" onClick={list.reload}>
          Refresh
        </button>
      </form>
      <Uploads id={id} dir={dir} onUploaded={list.reload} />
      {open && <FileView key={open.path} id={id} entry={open} onClose={() => setOpen(null)} onSaved={list.reload} />}
      <ErrorNote error={list.error && `Cannot list ${dir}: ${list.error}`} />
      <ErrorNote error={error} />
      <p class="muted small" aria-live="polite">
        {shown ? `${rows.length} ${rows.length === 1 ? "entry" : "entries"} in ${dir}` : list.loading ? 'Reading…' : ''}
      </p>
      <div class="table-box files-box">
        <table id="files-list" aria-label={`Files in ${dir}`}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Size</th>
              <th scope="col">Modified</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((e) => (
              <tr key={e.path} data-name={e.name} data-type={e.type}>
                <th scope="row">
                  {e.type === 'file' ? (
                    <button type="button" class="link" onClick={() => setOpen(e)} title="View or edit">
                      {e.name}
                    </button>
                  ) : (
                    <button type="button" class="link" onClick={() => go(e.path)} title="Open this folder">
                      {e.name}/
                    </button>
                  )}
                </th>
                <td>{kindOf(e)}</td>
                <td>{e.type === 'dir' ? '—' : bytes(e.size)}</td>
                <td>{time(e.modifiedTime)}</td>
                <td class="row-actions">
                  {e.type !== 'dir' && (
                    <>
                      <button type="button" onClick={() => setOpen(e)} aria-label={`View ${e.name}`}>
                        View
                      </button>
                      <button type="button" disabled={busy} onClick={() => download(e)} aria-label={`Download ${e.name}`}>
                        Download
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {shown && rows.length === 0 && <p class="empty">This folder is empty.</p>}
      </div>
    </div>
  );
}

function kindOf(e: FileEntry): string {
  if (e.type === 'dir') return 'folder';
  if (e.type === 'symlink') return e.symlinkTarget ? `link → ${e.symlinkTarget}` : 'link';
  return e.type;
}

// sortEntries puts folders first, then names in the reader's order.
function sortEntries(all: FileEntry[]): FileEntry[] {
  return [...all].sort((a, b) => Number(b.type === 'dir') - Number(a.type === 'dir') || a.name.localeCompare(b.name));
}

interface Upload {
  key: number;
  name: string;
  path: string;
  loaded: number;
  total: number;
  state: 'uploading' | 'done' | 'failed';
  error?: string;
  abort?: () => void;
}

// Uploads takes files dropped on its zone or chosen in its input and
// writes each into dir, showing each one's progress.
function Uploads({ id, dir, onUploaded }: { id: string; dir: string; onUploaded: () => void }) {
  const client = useClient();
  const [uploads, setUploads] = useState<Upload[]>([]);
  const [over, setOver] = useState(false);
  const [note, setNote] = useState('');
  const next = useRef(0);

  const update = (key: number, change: Partial<Upload>) => setUploads((all) => all.map((u) => (u.key === key ? { ...u, ...change } : u)));
  const start = (files: File[]) => {
    for (const file of files) {
      const key = ++next.current;
      const path = joinPath(dir, file.name);
      const up = uploadFile(client, id, path, file, (loaded, total) => update(key, { loaded, total }));
      setUploads((all) => [...all, { key, name: file.name, path, loaded: 0, total: file.size, state: 'uploading', abort: up.abort }]);
      up.done.then(
        () => {
          update(key, { state: 'done', loaded: file.size, abort: undefined });
          onUploaded();
        },
        (e: Error) => update(key, { state: 'failed', error: e.message, abort: undefined }),
      );
    }
  };
  const drop = (ev: DragEvent) => {
    ev.preventDefault();
    setOver(false);
    const dt = ev.dataTransfer;
    if (!dt) return;
    // A dropped folder arrives as a file that cannot be read: skip it.
    const items = [...dt.items].filter((i) => i.kind === 'file');
    const folders = items.filter((i) => i.webkitGetAsEntry?.()?.isDirectory).map((i) => i.getAsFile()?.name);
    const files = [...dt.files].filter((f) => !folders.includes(f.name));
    setNote(folders.length ? `Folders are not uploaded (${folders.join(', ')}): drop the files in them.` : '');
    start(files);
  };
  const dragging = (ev: DragEvent) => {
    if (!ev.dataTransfer?.types.includes('Files')) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
    setOver(true);
  };
  const finished = uploads.filter((u) => u.state !== 'uploading').length;

  return (
    <div class="uploads-area">
      <div id="files-drop" class={over ? 'drop over' : 'drop'} onDragEnter={dragging} onDragOver={dragging} onDragLeave={() => setOver(false)} onDrop={drop}>
        <span>
          {over ? 'Drop to upload to ' : 'Drop files here to upload them to '}
          <code>{dir}</code>, or
        </span>
        <label class="inline upload-pick">
          <span>choose files:</span>
          <input
            id="files-upload"
            type="file"
            multiple
            onChange={(e) => {
              const input = e.target as HTMLInputElement;
              start([...(input.files ?? [])]);
              input.value = '';
            }}
          />
        </label>
      </div>
      {note && (
        <p class="muted small" role="status">
          {note}
        </p>
      )}
      {uploads.length > 0 && (
        <ul class="uploads" aria-label="Uploads">
          {uploads.map((u) => (
            <li key={u.key} data-upload={u.name} data-state={u.state}>
              <span class="mono upload-name">{u.path}</span>
              <progress max={u.total || 1} value={u.state === 'done' ? u.total || 1 : u.loaded} aria-label={`Upload of ${u.name}`} />
              <span class={u.state === 'failed' ? 'error small' : 'small'}>{uploadText(u)}</span>
              {u.abort && (
                <button type="button" onClick={u.abort} aria-label={`Cancel the upload of ${u.name}`}>
                  Cancel
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {finished > 0 && (
        <button type="button" class="small" onClick={() => setUploads((all) => all.filter((u) => u.state === 'uploading'))}>
          Clear finished uploads
        </button>
      )}
    </div>
  );
}

function uploadText(u: Upload): string {
  switch (u.state) {
    case 'done':
      return `uploaded, ${bytes(u.total)}`;
    case 'failed':
      return `failed: ${u.error}`;
  }
  return `${u.total ? Math.floor((100 * u.loaded) / u.total) : 0}% of ${bytes(u.total)}`;
}
