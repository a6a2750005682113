// The official E2B CLI (npm @e2b/cli) against `roost up`: node cli.mjs.
// Runs its sandbox commands as a user would, with E2B_API_KEY and either
// E2B_API_URL and E2B_SANDBOX_URL or E2B_DOMAIN (the CLI reads them through
// its bundled SDK), and checks what each prints. The terminal commands
// (sandbox create, connect) need a TTY: they run on a pseudo-terminal
// through ptybridge.py.
//
// With E2B_API_URL the CLI's API traffic goes through a recording proxy on
// loopback, so a failed step names the requests roost answered with an
// error status and what it answered. Each step prints one JSON line
// {step, result, detail} on stdout, as sdk.mjs does.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const cliBin = join(here, 'node_modules', '@e2b', 'cli', 'dist', 'index.js')
const bridge = join(here, 'ptybridge.py')
const python = process.env.PYTHON || '/usr/bin/python3'
// One CLI command's bound; a terminal left hanging is killed after it.
const CLI_MS = 45_000

const urlMode = Boolean(process.env.E2B_API_URL)
if (!process.env.E2B_API_KEY || (urlMode ? !process.env.E2B_SANDBOX_URL : !process.env.E2B_DOMAIN)) {
  throw new Error('run through run.sh: E2B_API_KEY and either E2B_API_URL and E2B_SANDBOX_URL or E2B_DOMAIN must be set')
}

function report(step, result, detail = '') {
  process.stdout.write(JSON.stringify({ step, result, detail }) + '\n')
}

// Errors the CLI's API requests got, oldest first; each step reads and
// clears it.
let failedRequests = []

// Forwards to roost's API unchanged and remembers every answer of 400 or
// more with its request line and the start of its body.
function startRecorder() {
  const apiURL = new URL(process.env.E2B_API_URL)
  const server = http.createServer((req, res) => {
    const upstream = http.request({ host: apiURL.hostname, port: apiURL.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers)
      if (up.statusCode < 400) return up.pipe(res)
      let body = ''
      up.on('data', (d) => { body += d; res.write(d) })
      up.on('end', () => {
        failedRequests.push(`${req.method} ${req.url} → ${up.statusCode} ${body.trim().slice(0, 300)}`)
        res.end()
      })
    })
    upstream.on('error', (err) => {
      failedRequests.push(`${req.method} ${req.url} → no answer from roost: ${err.message}`)
      res.destroy()
    })
    req.pipe(upstream)
  })
  server.listen(0, '127.0.0.1')
  return server
}

// Runs the CLI with args; with a terminal, on a 100×30 PTY. onOutput sees the
// output so far and may write to the CLI's input. Resolves {code, out}.
function runCLI(args, { env, terminal = false, onOutput } = {}) {
  const argv = terminal ? [python, [bridge, '100', '30', '--', process.execPath, cliBin, ...args]] : [process.execPath, [cliBin, ...args]]
  // NO_UPDATE_NOTIFIER: the CLI would ask registry.npmjs.org for a newer
  // version; tests talk to loopback only.
  const child = spawn(argv[0], argv[1], { env: { ...process.env, ...env, NO_COLOR: '1', FORCE_COLOR: '0', NO_UPDATE_NOTIFIER: '1' }, stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  const collect = (d) => {
    out += d
    onOutput?.(out, (text) => child.stdin.write(text))
  }
  child.stdout.on('data', collect)
  child.stderr.on('data', collect)
  child.stdin.on('error', () => {}) // input to a CLI that already exited
  const timer = setTimeout(() => { out += `\n[killed: no exit within ${CLI_MS} ms]`; child.kill('SIGKILL') }, CLI_MS)
  return once(child, 'close').then(([code, signal]) => {
    clearTimeout(timer)
    return { code: code ?? `signal ${signal}`, out }
  })
}

// Sends each input once after the output contains its trigger, in order.
function conversation(steps) {
  let next = 0
  return (out, write) => {
    while (next < steps.length && out.includes(steps[next][0])) write(steps[next++][1])
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what)
}

// The output without ANSI sequences and carriage returns, for matching.
function plain(out) {
  return out.replace(/\x1b\][^\x07]*\x07/g, '').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '')
}

// What a failed command said: its first error line when it printed a stack
// trace, else the end of its output.
function tail(out, n = 400) {
  const p = plain(out).trim()
  const error = p.split('\n').find((l) => /^\w*Error\b/.test(l))
  if (error) return error.slice(0, n)
  return p.length > n ? '…' + p.slice(-n) : p
}

async function step(name, fn) {
  failedRequests = []
  try {
    report(name, 'ok', (await fn()) ?? '')
    return true
  } catch (err) {
    const requests = failedRequests.length ? ` | requests: ${failedRequests.join(' ; ')}` : ''
    report(name, 'fail', `${err.message}${requests}`)
    return false
  }
}

// sandbox create (spawn's successor) connects a terminal to a new sandbox;
// on exit the CLI shortens its timeout to a second, as it does on E2B.
async function createWithTerminal(env) {
  const talk = conversation([['Terminal connecting', 'echo cli-$((6*7))\n'], ['cli-42', 'exit\n']])
  const r = await runCLI(['sandbox', 'create', 'base'], { env, terminal: true, onOutput: talk })
  const text = plain(r.out)
  expect(r.code === 0, `exit ${r.code}: ${tail(r.out)}`)
  expect(text.includes('cli-42'), `no "cli-42" from the terminal: ${tail(r.out)}`)
  const id = /with sandbox ID (\S+)/.exec(text)?.[1]
  expect(id, `no sandbox ID in: ${tail(r.out)}`)
  return id
}

async function createDetached(env) {
  const r = await runCLI(['sandbox', 'create', 'base', '--detach', '--timeout', '300'], { env })
  expect(r.code === 0, `exit ${r.code}: ${tail(r.out)}`)
  const id = plain(r.out).trim().split('\n').pop()
  expect(/^[a-z0-9]+$/.test(id), `no sandbox ID in: ${tail(r.out)}`)
  return id
}

async function listed(env, id) {
  const pretty = await runCLI(['sandbox', 'list'], { env })
  expect(pretty.code === 0, `list: exit ${pretty.code}: ${tail(pretty.out)}`)
  expect(plain(pretty.out).includes(id), `list does not show ${id}: ${tail(pretty.out)}`)
  const json = await runCLI(['sandbox', 'list', '--format', 'json'], { env })
  expect(json.code === 0, `list --format json: exit ${json.code}: ${tail(json.out)}`)
  const row = JSON.parse(json.out).find((s) => s.sandboxId === id)
  expect(row?.state === 'running' && row?.templateId && row?.memoryMB > 0, `list --format json: ${id} is ${JSON.stringify(row)}`)
  return row
}

async function connectTerminal(env, id) {
  const talk = conversation([['Terminal connecting', 'echo connect-$((6*7)) $(tput cols)x$(tput lines)\n'], ['connect-42 ', 'exit\n']])
  const r = await runCLI(['sandbox', 'connect', id], { env, terminal: true, onOutput: talk })
  const text = plain(r.out)
  expect(r.code === 0, `exit ${r.code}: ${tail(r.out)}`)
  const size = /connect-42 (\d+x\d+)/.exec(text)?.[1]
  expect(size === '100x30', `terminal answered ${JSON.stringify(size)}, want "100x30": ${tail(r.out)}`)
  expect(text.includes(`Closing terminal connection to sandbox ${id}`), `no closing line: ${tail(r.out)}`)
  return `PTY echo and size ${size}`
}

async function logs(env, id) {
  const r = await runCLI(['sandbox', 'logs', id, '--format', 'json', '--level', 'DEBUG'], { env })
  expect(r.code === 0, `exit ${r.code}: ${tail(r.out)}`)
  const lines = plain(r.out).split('\n').filter((l) => l.startsWith('{'))
  expect(lines.length > 0, `no log lines: ${tail(r.out)}`)
  const first = JSON.parse(lines[0])
  expect(first.timestamp && first.level, `log line without timestamp or level: ${lines[0]}`)
  return `${lines.length} lines`
}

// The sandbox's own CPUs and memory, as E2B reports them: what a user's
// dashboard shows as its load and use.
async function metrics(env, sandbox) {
  const r = await runCLI(['sandbox', 'metrics', sandbox.sandboxId, '--format', 'json'], { env })
  expect(r.code === 0, `exit ${r.code}: ${tail(r.out)}`)
  const lines = plain(r.out).split('\n').filter((l) => l.startsWith('{'))
  expect(lines.length > 0, `no metrics: ${tail(r.out)}`)
  const m = JSON.parse(lines.at(-1))
  const mib = (b) => Math.round(b / 2 ** 20)
  const seen = `${m.cpuCount} CPU, ${mib(m.memUsed)}/${mib(m.memTotal)} MiB`
  expect(m.memUsed > 0 && m.memUsed <= m.memTotal, `implausible memory: ${lines.at(-1)}`)
  expect(m.cpuCount === sandbox.cpuCount && mib(m.memTotal) <= sandbox.memoryMB,
    `metrics say ${seen}; the sandbox has ${sandbox.cpuCount} CPU and ${sandbox.memoryMB} MiB`)
  return `${lines.length} samples, ${seen}`
}

async function kill(env, id) {
  const r = await runCLI(['sandbox', 'kill', id], { env })
  expect(r.code === 0 && plain(r.out).includes(`Sandbox ${id} has been killed`), `exit ${r.code}: ${tail(r.out)}`)
  const json = await runCLI(['sandbox', 'list', '--format', 'json'], { env })
  expect(json.code === 0 && !JSON.parse(json.out).some((s) => s.sandboxId === id), `${id} still listed after kill: ${tail(json.out)}`)
}

async function main() {
  const recorder = urlMode ? startRecorder() : null
  if (recorder) await once(recorder, 'listening')
  const env = recorder ? { E2B_API_URL: `http://127.0.0.1:${recorder.address().port}` } : {}
  try {
    await step('create+terminal', () => createWithTerminal(env))
    let id
    if (!(await step('create --detach', async () => (id = await createDetached(env))))) {
      for (const name of ['list', 'connect', 'logs', 'metrics', 'kill']) report(name, 'skip', 'no sandbox: create --detach failed')
      return
    }
    let sandbox
    await step('list', async () => {
      sandbox = await listed(env, id)
      return `${id} running, template ${sandbox.templateId}`
    })
    await step('connect', () => connectTerminal(env, id))
    await step('logs', () => logs(env, id))
    await step('metrics', () => metrics(env, sandbox ?? { sandboxId: id }))
    await step('kill', () => kill(env, id))
  } finally {
    recorder?.close()
    recorder?.closeAllConnections()
  }
}

await main()
