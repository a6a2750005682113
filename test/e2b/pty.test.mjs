// sbx.pty against envd's Process service with a PTY, through the real E2B SDK.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { CommandExitError } from 'e2b'

import { TEST_TIMEOUT_MS, createSandbox, settle, waitFor, within } from './helpers.mjs'

describe('pty', { timeout: 60_000 }, () => {
  let sbx
  const started = []
  const encoder = new TextEncoder()

  before(async () => {
    sbx = await createSandbox()
  })

  after(async () => {
    for (const pid of started) await sbx.pty.kill(pid).catch(() => {})
  })

  // Starts an interactive shell on a PTY; output() is everything it printed.
  async function shell(size = { cols: 80, rows: 24 }) {
    const decoder = new TextDecoder()
    let text = ''
    const handle = await sbx.pty.create({
      ...size,
      onData: (bytes) => { text += decoder.decode(bytes, { stream: true }) },
      timeoutMs: TEST_TIMEOUT_MS,
    })
    started.push(handle.pid)
    return { handle, output: () => text, type: (s) => sbx.pty.sendInput(handle.pid, encoder.encode(s)) }
  }

  test('create and sendInput: the shell runs what is typed', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { handle, output, type } = await shell()
    assert.ok(handle.pid > 0)
    // The echoed input reads "marker-$((6*7))"; only the shell's answer reads marker-42.
    await type('echo marker-$((6*7))\n')
    await waitFor(() => output().includes('marker-42'), 'marker-42 in the PTY output', 10_000)
  })

  test('the PTY has the requested size, and resize changes it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { handle, output, type } = await shell({ cols: 90, rows: 25 })
    await type('echo size-$(stty size | tr " " x)\n')
    await waitFor(() => output().includes('size-25x90'), 'stty size 25x90', 10_000)

    await sbx.pty.resize(handle.pid, { cols: 111, rows: 33 })
    await type('echo size-$(stty size | tr " " x)\n')
    await waitFor(() => output().includes('size-33x111'), 'stty size 33x111 after resize', 10_000)
  })

  test('kill returns true and the handle\'s wait settles', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { handle, output, type } = await shell()
    await type('echo ready-$((1+1))\n')
    await waitFor(() => output().includes('ready-2'), 'the shell to be ready', 10_000)

    assert.equal(await handle.kill(), true)
    const { ok, error } = await settle(within(handle.wait(), 5_000, 'wait() after kill'))
    assert.equal(ok, false, 'a killed PTY ends with a non-zero exit')
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.equal(error.exitCode, -1)
  })

  test('typing exit ends the shell with its exit code', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { handle, type } = await shell()
    await type('exit 0\n')
    const result = await within(handle.wait(), 10_000, 'wait() after exit')
    assert.equal(result.exitCode, 0)
  })
})
