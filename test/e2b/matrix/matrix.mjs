// The version matrix: the E2B JS SDK releases of package.json (sdk.mjs) and
// the E2B CLI (cli.mjs) against `roost up`, one after the other.
//
//   node matrix.mjs run url OUT.json      releases of URL mode and the CLI, against
//                                         ROOST_MATRIX_URL (plain HTTP on loopback)
//   node matrix.mjs run domain OUT.json   releases of domain mode and the CLI with only
//                                         E2B_DOMAIN, inside test/e2b/domain/stack.sh
//   node matrix.mjs report A.json ...     the table of release × step and the details
//                                         of every step that did not pass
//
// Both exit 1 when a step failed (run having written OUT).
// run.sh drives it: it starts roost up and sets ROOST_MATRIX_URL and
// E2B_API_KEY for the url run, then runs the domain run through the domain
// harness, which sets E2B_DOMAIN, E2B_API_KEY and what makes Node trust and
// reach its roost up.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

// How each release reaches roost. url: E2B_API_URL and E2B_SANDBOX_URL. The
// JS SDK reads both from 2.7.0 on, but until 2.14.1 its envd HTTP requests
// (files up- and download, the health check behind isRunning) go to
// E2B_SANDBOX_URL without E2b-Sandbox-Id, so no shared proxy can route them.
// domain: the release knows only E2B_DOMAIN (https://api.{domain},
// https://{port}-{id}.{domain}).
const releases = [
  { version: '1.13.2', mode: 'domain', why: 'the newest 1.x' },
  { version: '2.0.1', mode: 'domain', why: 'the first 2.x' },
  { version: '2.14.1', mode: 'url', why: 'the first whose every envd request carries the sandbox headers' },
  { version: '2.45.0', mode: 'url', why: "E2B's suite's; refuses keys not e2b_ + hex" },
  { version: '2.51.0', mode: 'url', why: 'the newest' },
]
const sdkSteps = ['create', 'command', 'file', 'pty', 'pause', 'connect', 'kill']
const cliSteps = ['create+terminal', 'create --detach', 'list', 'connect', 'logs', 'metrics', 'kill']

function required(name) {
  const v = process.env[name]
  if (!v) throw new Error(`run through run.sh: ${name} is not set`)
  return v
}

// The environment of a run in mode. domain keeps what
// test/e2b/domain/stack.sh set (E2B_DOMAIN, the CA, the resolver preload).
function modeEnv(mode) {
  const env = { ...process.env }
  if (mode === 'domain') return env
  for (const k of ['E2B_DOMAIN', 'E2B_DEBUG']) delete env[k]
  const roost = required('ROOST_MATRIX_URL')
  return { ...env, E2B_API_URL: roost, E2B_SANDBOX_URL: roost }
}

// The API's address in mode, for the clean-up.
function apiBase(mode) {
  return mode === 'domain' ? `https://api.${required('E2B_DOMAIN')}` : required('ROOST_MATRIX_URL')
}

// Runs one of the step scripts and collects its JSON lines by step name;
// whatever else it prints (a crash) becomes the detail of a "run" failure.
async function runSteps(script, args, env) {
  const child = spawn(process.execPath, [join(here, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  const [code] = await once(child, 'close')
  const results = {}
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue
    const r = JSON.parse(line)
    results[r.step] = r
  }
  if (code !== 0) results.run = { step: 'run', result: 'fail', detail: `exit ${code}: ${(err || out).trim().slice(-600)}` }
  return results
}

// Kills whatever the runs left behind (a failed step leaves its sandbox):
// the roost up of a run is the matrix's own, so every sandbox in it is.
async function killLeftovers(base) {
  const headers = { 'X-API-Key': required('E2B_API_KEY') }
  const res = await fetch(`${base}/v2/sandboxes?state=running,paused`, { headers })
  if (!res.ok) throw new Error(`list sandboxes: ${res.status} ${await res.text()}`)
  const left = await res.json()
  await Promise.all(left.map((s) => fetch(`${base}/sandboxes/${s.sandboxID}`, { method: 'DELETE', headers })))
  return left.length
}

async function timed(label, note, fn) {
  const started = Date.now()
  const results = await fn()
  console.log(`${label}: ${((Date.now() - started) / 1000).toFixed(1)} s${note ? ` (${note})` : ''}`)
  return { label, results }
}

async function run(mode, outFile) {
  const env = modeEnv(mode)
  const sdk = []
  for (const rel of releases.filter((r) => r.mode === mode)) {
    sdk.push(await timed(`e2b ${rel.version} (${mode})`, rel.why, () => runSteps('sdk.mjs', [rel.version], env)))
  }
  const version = JSON.parse(readFileSync(join(here, 'node_modules', '@e2b', 'cli', 'package.json'), 'utf8')).version
  const cli = [await timed(`@e2b/cli ${version} (${mode})`, '', () => runSteps('cli.mjs', [], env))]
  const leftovers = await killLeftovers(apiBase(mode))
  writeFileSync(outFile, JSON.stringify({ sdk, cli, leftovers }))
  // A failure makes test/e2b/domain/stack.sh print its roost up's log.
  if (failed([...sdk, ...cli])) process.exitCode = 1
}

function failed(rows) {
  return rows.some((r) => Object.values(r.results).some((x) => x.result === 'fail'))
}

function printTable(title, rows, steps) {
  const cell = (results, step) => results[step]?.result ?? (results.run ? 'fail' : '-')
  const header = [title, ...steps]
  const lines = [header, ...rows.map((r) => [r.label, ...steps.map((s) => cell(r.results, s))])]
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)))
  for (const l of lines) console.log(l.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())
}

function report(files) {
  const runs = files.map((f) => JSON.parse(readFileSync(f, 'utf8')))
  const sdk = runs.flatMap((r) => r.sdk)
  const cli = runs.flatMap((r) => r.cli)
  console.log('')
  printTable('E2B JS SDK', sdk, sdkSteps)
  console.log('')
  printTable('E2B CLI', cli, cliSteps)
  console.log('')
  for (const row of [...sdk, ...cli]) {
    for (const res of Object.values(row.results)) {
      if (res.result !== 'ok' && res.result !== 'skip') console.log(`  ${row.label} ${res.step}: ${res.result}: ${res.detail}`)
    }
  }
  const leftovers = runs.reduce((n, r) => n + r.leftovers, 0)
  if (leftovers > 0) console.log(`  killed ${leftovers} sandboxes the runs left behind`)
  process.exitCode = failed([...sdk, ...cli]) ? 1 : 0
}

const [command, ...args] = process.argv.slice(2)
if (command === 'run' && ['url', 'domain'].includes(args[0]) && args[1]) await run(args[0], args[1])
else if (command === 'report' && args.length > 0) report(args)
else throw new Error('usage: node matrix.mjs run url|domain OUT.json | report RESULTS.json...')
