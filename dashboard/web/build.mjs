// Builds the dashboard into dist/: one script, one stylesheet and the
// page, each fingerprinted so that the server may let browsers cache them
// for good. Run by make build (npm run build); dist/ is not committed.
import * as esbuild from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const out = 'dist';
// The budget the issue sets for the JavaScript a browser downloads.
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
const names = {};
let jsGzip = 0;
for (const f of result.outputFiles) {
  const base = f.path.slice(f.path.lastIndexOf('/') + 1);
  const dot = base.indexOf('.');
  const hash = createHash('sha256').update(f.contents).digest('hex').slice(0, 10);
  const name = `${base.slice(0, dot)}-${hash}${base.slice(dot)}`;
  names[base] = name;
  writeFileSync(`${out}/${name}`, f.contents);
  if (base.endsWith('.js')) jsGzip += gzipSync(f.contents, { level: 9 }).length;
}
const page = readFileSync('index.html', 'utf8')
  .replace('app.js', names['app.js'])
  .replace('app.css', names['app.css']);
writeFileSync(`${out}/index.html`, page);
console.log(`dashboard: ${names['app.js']} ${(jsGzip / 1024).toFixed(1)} KiB gzipped (budget ${budgetGzip / 1024} KiB)`);
if (jsGzip > budgetGzip) {
  console.error('dashboard: the JavaScript is over its budget');
  process.exit(1);
}
