// The sandbox's filesystem as roost's API offers it: list a directory
// (GET .../files/list), read a file (GET .../files), write one (PUT
// .../files, parents made, an existing file replaced). There is no
// delete.
import { ApiError, type Client, enc, type FileEntry, q } from '../api';

export const filesPath = (id: string, path: string) => `/v1/sandboxes/${enc(id)}/files${q({ path })}`;

export const listDir = (c: Client, id: string, path: string) => c.get<FileEntry[]>(`/v1/sandboxes/${enc(id)}/files/list${q({ path })}`);

export async function readFile(c: Client, id: string, path: string): Promise<Blob> {
  return (await c.raw('GET', filesPath(id, path))).blob();
}

export const writeFile = (c: Client, id: string, path: string, body: BodyInit) => c.raw('PUT', filesPath(id, path), { body });

// uploadFile writes file to path with XMLHttpRequest, the one browser
// API that reports an upload's progress; abort cancels it.
export function uploadFile(
  c: Client,
  id: string,
  path: string,
  file: Blob,
  progress: (loaded: number, total: number) => void,
): { done: Promise<void>; abort: () => void } {
  const xhr = new XMLHttpRequest();
  const done = new Promise<void>((resolve, reject) => {
    xhr.open('PUT', filesPath(id, path));
    c.headers({ 'Content-Type': 'application/octet-stream' }).forEach((v, k) => xhr.setRequestHeader(k, v));
    xhr.upload.onprogress = (e) => progress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new ApiError(xhr.status, messageOf(xhr))));
    xhr.onerror = () => reject(new ApiError(0, 'cannot reach roost'));
    xhr.onabort = () => reject(new ApiError(0, 'cancelled'));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}

// messageOf is the API's error message in xhr's answer (E2B's
// {"code","message"}), else its text.
function messageOf(xhr: XMLHttpRequest): string {
  try {
    const body = JSON.parse(xhr.responseText) as { message?: string };
    if (body.message) return body.message;
  } catch {
    // not JSON: the text is the message
  }
  return xhr.responseText.trim() || xhr.statusText;
}

// joinPath is dir/name; parentOf the directory above path ("/" stays).
export function joinPath(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

export function parentOf(path: string): string {
  const p = path.replace(/\/+$/, '');
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

// saveBlob hands a blob to the browser as a download named name.
export function saveBlob(blob: Blob, name: string) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  // The download has taken the blob by the next task.
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
