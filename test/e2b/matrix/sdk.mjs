// One release of the E2B JS SDK against `roost up`: node sdk.mjs VERSION.
// It imports the release through its npm alias (e2b-VERSION, package.json)
// and runs the steps a user's first program runs: create a sandbox, run a
// command, write and read a file, open a PTY, pause, connect (which resumes
// it), kill. Each step prints one JSON line {step, result, detail} on stdout,
// result being ok, fail or n/a (the release has no such API); a failed step
// skips the rest except kill. matrix.mjs runs this once per release with the
// environment its mode needs and prints the table.

import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'

const version = process.argv[2]
if (!version) throw new Error('usage: node sdk.mjs VERSION (a release aliased as e2b-VERSION in package.json)')
const { Sandbox } = await import(`e2b-${version}`)

// Creating the first sandbox on a fresh data dir builds the base template.
const CREATE_MS = 180_000
const STEP_MS = 30_000
const tag = randomUUID().slice(0, 8)

function report(step, result, detail = '') {
  process.stdout.write(JSON.stringify({ step, result, detail }) + '\n')
}

async function within(ms, what, fn) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([fn(), timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function waitFor(check, what, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what)
}

async function create() {
  const sbx = await Sandbox.create('base', { timeoutMs: 300_000, metadata: { matrix: tag, sdk: version } })
  expect(typeof sbx.sandboxId === 'string' && sbx.sandboxId !== '', 'create returned no sandbox ID')
  return { sbx, detail: sbx.sandboxId }
}

async function command(sbx) {
  const r = await sbx.commands.run('echo "sdk $SDK"; python3 -c "print(6*7)"', { envs: { SDK: version } })
  expect(r.exitCode === 0 && r.stdout === `sdk ${version}\n42\n`, `unexpected result: ${JSON.stringify(r)}`)
}

async function file(sbx) {
  const path = `/home/user/matrix-${tag}.txt`
  const text = `written by e2b ${version}\n`
  await sbx.files.write(path, text)
  const back = await sbx.files.read(path)
  expect(back === text, `read back ${JSON.stringify(back)}, wrote ${JSON.stringify(text)}`)
}

async function pty(sbx) {
  let out = ''
  const decoder = new TextDecoder()
  const handle = await sbx.pty.create({ cols: 80, rows: 24, timeoutMs: 0, onData: (d) => { out += decoder.decode(d, { stream: true }) } })
  // The shell echoes the input line; only the command's output has "pty-42".
  await sbx.pty.sendInput(handle.pid, new TextEncoder().encode('echo pty-$((6*7))\n'))
  await waitFor(() => out.includes('pty-42'), `"pty-42" in the PTY output (got ${JSON.stringify(out.slice(-200))})`)
  expect(await sbx.pty.kill(handle.pid), 'pty.kill answered false')
  await handle.wait().catch(() => {}) // killed: the SDK rejects with the signal
}

function pauseMethod(sbx) {
  if (typeof sbx.pause === 'function') return 'pause'
  if (typeof sbx.betaPause === 'function') return 'betaPause'
  return null
}

async function pause(sbx) {
  const method = pauseMethod(sbx)
  if (!method) return { result: 'n/a', detail: `e2b ${version} has no pause API` }
  await sbx[method]()
  const info = await Sandbox.getInfo(sbx.sandboxId)
  expect(info.state === undefined || info.state === 'paused', `state after ${method}: ${info.state}`)
  return { detail: `${method}(); state ${info.state ?? '(not reported)'}` }
}

// Sandbox.connect resumes a paused sandbox; the file written before the pause
// proves it is the same one.
async function connect(sbx) {
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 })
  const r = await again.commands.run(`cat /home/user/matrix-${tag}.txt`)
  expect(r.stdout === `written by e2b ${version}\n`, `after connect the file reads ${JSON.stringify(r.stdout)}`)
}

async function kill(sbx) {
  await sbx.kill()
  expect(!(await sbx.isRunning()), 'isRunning() is still true after kill()')
}

async function step(name, ms, fn) {
  try {
    const res = (await within(ms, name, fn)) ?? {}
    report(name, res.result ?? 'ok', res.detail ?? '')
    return true
  } catch (err) {
    report(name, 'fail', `${err?.name ?? 'Error'}: ${err?.message ?? err}`)
    return false
  }
}

async function main() {
  let sbx
  const created = await step('create', CREATE_MS, async () => {
    const r = await create()
    sbx = r.sbx
    return { detail: r.detail }
  })
  if (!created) return
  const steps = [['command', command], ['file', file], ['pty', pty], ['pause', pause], ['connect', connect]]
  let failed = false
  for (const [name, fn] of steps) {
    if (failed) report(name, 'skip', 'an earlier step failed')
    else failed = !(await step(name, STEP_MS, () => fn(sbx)))
  }
  await step('kill', STEP_MS, () => kill(sbx))
}

await main()
// A failed SDK call can leave a timer of its own behind (2.0.1's commands.run
// clears its 60 s request timer only on success): the steps are done.
process.exit(0)
