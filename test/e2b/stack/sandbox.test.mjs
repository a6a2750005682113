// The official E2B JS SDK against `roost up`: the control plane's REST API
// (E2B_API_URL) and its proxy (E2B_SANDBOX_URL) in front of a real host agent.
// Run through test/e2b/run-stack.sh.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'

import { CommandExitError, NotFoundError, Sandbox } from 'e2b'

const run = randomUUID().slice(0, 8) // tags this run's sandboxes
const T = 60_000

async function waitFor(check, what, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe('roost up with the E2B SDK', { timeout: 240_000 }, () => {
  let sbx
  before(async () => {
    if (!process.env.E2B_API_KEY || !process.env.E2B_SANDBOX_URL) throw new Error('run through test/e2b/run-stack.sh')
    sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { suite: run, role: 'main' }, envs: { ROOST_GREETING: 'hello from roost' } })
  })
  after(async () => { await sbx?.kill().catch(() => {}) })

  test('commands run with the sandbox envs, python3 included', { timeout: T }, async () => {
    const r = await sbx.commands.run('echo "$ROOST_GREETING"; python3 -c "print(6*7)"; id -un')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'hello from roost\n42\nuser\n')
    await assert.rejects(sbx.commands.run('echo oops >&2; exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'oops\n')
  })

  test('background command and kill', { timeout: T }, async () => {
    const h = await sbx.commands.run('echo started; sleep 600', { background: true })
    await waitFor(() => h.stdout.includes('started'), 'background output')
    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1)
  })

  test('files round trip', { timeout: T }, async () => {
    const data = new Uint8Array(3 << 20)
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff
    await sbx.files.write('/home/user/blob.bin', data.buffer)
    const back = await sbx.files.read('/home/user/blob.bin', { format: 'bytes' })
    assert.equal(Buffer.compare(Buffer.from(back), Buffer.from(data)), 0)
    const names = (await sbx.files.list('/home/user')).map((e) => e.name)
    assert.ok(names.includes('blob.bin'), names.join(','))
  })

  test('pty', { timeout: T }, async () => {
    let out = ''
    const dec = new TextDecoder()
    const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d) } })
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo pty-$((6*7))\n'))
    await waitFor(() => out.includes('pty-42'), 'pty echo')
    assert.equal(await sbx.pty.kill(pty.pid), true)
  })

  test('list by metadata, setTimeout, getInfo', { timeout: T }, async () => {
    const other = await Sandbox.create('base', { metadata: { suite: run, role: 'other' } })
    try {
      const page = await Sandbox.list({ query: { metadata: { suite: run, role: 'main' } } }).nextItems()
      assert.deepEqual(page.map((s) => s.sandboxId), [sbx.sandboxId])
      const all = await Sandbox.list({ query: { metadata: { suite: run } } }).nextItems()
      assert.equal(all.length, 2)
    } finally {
      await other.kill()
    }
    await sbx.setTimeout(300_000)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.metadata.role, 'main')
    const left = info.endAt.getTime() - Date.now()
    assert.ok(left > 250_000 && left <= 300_000, `endAt in ${left} ms`)
  })

  test('pause and connect keep files and running processes', { timeout: T }, async () => {
    await sbx.files.write('/home/user/kept.txt', 'kept')
    await sbx.commands.run('nohup bash -c "while :; do date +%s%N > /tmp/tick; sleep 0.1; done" >/dev/null 2>&1 &')
    await sleep(300)
    await sbx.pause()
    const resumed = await Sandbox.connect(sbx.sandboxId)
    assert.equal(await resumed.files.read('/home/user/kept.txt'), 'kept')
    const t1 = (await resumed.files.read('/tmp/tick')).trim()
    await sleep(400)
    const t2 = (await resumed.files.read('/tmp/tick')).trim()
    assert.notEqual(t1, t2, 'the loop stopped running')
  })

  test('kill', { timeout: T }, async () => {
    const doomed = await Sandbox.create('base', { metadata: { suite: run, role: 'doomed' } })
    await doomed.kill()
    await assert.rejects(Sandbox.getInfo(doomed.sandboxId), (e) => e instanceof NotFoundError || /not found/i.test(String(e)))
  })
})
