// Builds the dashboard into dist/: the entry script, the chunks it loads
// when a page needs them (the sandbox page's terminal and charts), one
// stylesheet and the page. Every name carries its content's hash, so that
// the server may let browsers cache them for good. Run by make build (npm
// run build); dist/ is not committed.
import * as esbuild from 'esbuild';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { gzipSync } from 'node:zlib';

const out = 'dist';
// The budget the issue sets for the JavaScript a browser downloads: all
// of it, chunks included.
const budgetGzip = 250 * 1024;

const result = await esbuild.build({
  entryPoints: { app: 'src/main.tsx' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome111', 'firefox111', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'linked',
  splitting: true,
  entryNames: '[name]-[hash]',
  chunkNames: 'chunk-[hash]',
  write: false,
  outdir: out,
  metafile: true,
  logLevel: 'warning',
});

// dist/ keeps its committed .gitignore: the embed needs a file there in
// a checkout that was never built.
mkdirSync(out, { recursive: true });
for (const f of readdirSync(out)) {
  if (f !== '.gitignore') rmSync(`${out}/${f}`, { recursive: true, force: true });
}
let jsGzip = 0;
for (const f of result.outputFiles) {
  writeFileSync(`${out}/${basename(f.path)}`, f.contents);
  if (f.path.endsWith('.js')) jsGzip += gzipSync(f.contents, { level: 9 }).length;
}
// The entry's script and stylesheet, as the metafile names them.
const entry = Object.entries(result.metafile.outputs).find(([, o]) => o.entryPoint === 'src/main.tsx');
const script = basename(entry[0]);
const style = basename(entry[1].cssBundle);
const page = readFileSync('index.html', 'utf8').replace('app.js', script).replace('app.css', style);
writeFileSync(`${out}/index.html`, page);
console.log(`dashboard: ${script} and its chunks ${(jsGzip / 1024).toFixed(1)} KiB gzipped (budget ${budgetGzip / 1024} KiB)`);
if (jsGzip > budgetGzip) {
  console.error('dashboard: the JavaScript is over its budget');
  process.exit(1);
}
