// sbx.commands against envd's Process service, through the real E2B SDK.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { CommandExitError, NotFoundError, TimeoutError } from 'e2b'

import { TEST_TIMEOUT_MS, createSandbox, makeTempDir, settle, sha256, waitFor, within } from './helpers.mjs'

describe('commands', { timeout: 60_000 }, () => {
  let sbx
  let dir
  // Background commands a test started; after() kills any still running.
  const started = []

  before(async () => {
    sbx = await createSandbox()
    dir = await makeTempDir(sbx, 'commands')
  })

  after(async () => {
    for (const pid of started) await sbx.commands.kill(pid).catch(() => {})
    if (dir) await sbx.files.remove(dir)
  })

  async function background(cmd, opts = {}) {
    const handle = await sbx.commands.run(cmd, { background: true, timeoutMs: TEST_TIMEOUT_MS, ...opts })
    started.push(handle.pid)
    return handle
  }

  // Starts `echo ready; cmd` in the background and returns once "ready" is
  // out, so a later kill never lands inside bash -l's profile scripts. (On a
  // machine whose ~/.bashrc runs `pyenv init`, a SIGKILL there leaves pyenv's
  // rehash lock behind and every later login shell stalls for 60 s.)
  async function backgroundReady(cmd, opts = {}) {
    let out = ''
    const handle = await background(`echo ready; ${cmd}`, { ...opts, onStdout: (d) => { out += d } })
    await waitFor(() => out.startsWith('ready\n'), 'the command to print ready')
    return handle
  }

  test('run returns stdout, stderr and exit code 0', { timeout: TEST_TIMEOUT_MS }, async () => {
    const result = await sbx.commands.run('echo out; echo err >&2')
    assert.equal(result.exitCode, 0)
    assert.equal(result.stdout, 'out\n')
    assert.equal(result.stderr, 'err\n')
  })

  test('run of a failing command throws CommandExitError with exit code and output', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { ok, error } = await settle(sbx.commands.run('echo partial; echo boom >&2; exit 3'))
    assert.equal(ok, false, 'a non-zero exit must reject')
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.equal(error.exitCode, 3)
    assert.equal(error.stdout, 'partial\n')
    assert.equal(error.stderr, 'boom\n')
  })

  // envd sets EndEvent.error to Go's cmd.Wait() error text, as upstream does;
  // the SDK uses it as CommandExitError's message.
  test('CommandExitError carries the upstream error text', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { ok, error } = await settle(sbx.commands.run('exit 3'))
    assert.equal(ok, false)
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.equal(error.exitCode, 3)
    assert.equal(error.error, 'exit status 3')
    assert.match(error.message, /exit status 3/)
  })

  test('large output arrives complete and in order', { timeout: TEST_TIMEOUT_MS }, async () => {
    const file = `${dir}/random.bin`
    await sbx.commands.run(`head -c 1500000 /dev/urandom > ${file}`)
    const want = (await sbx.commands.run(`base64 -w 0 ${file} | sha256sum`)).stdout.split(' ')[0]
    const result = await sbx.commands.run(`base64 -w 0 ${file}`)
    assert.equal(result.stdout.length, 2_000_000)
    assert.equal(sha256(result.stdout), want)
  })

  test('user option runs the command as that user', { timeout: TEST_TIMEOUT_MS }, async () => {
    const me = (await sbx.commands.run('id -un')).stdout.trim()
    const result = await sbx.commands.run('id -un; echo $HOME', { user: me })
    const [name, home] = result.stdout.trim().split('\n')
    assert.equal(name, me)
    assert.ok(home.startsWith('/'), `HOME is ${home}`)
  })

  // 3 s, not less: the deadline SIGKILLs the shell, and the login profile
  // must be done by then (see backgroundReady).
  test('timeoutMs ends a long command with TimeoutError', { timeout: TEST_TIMEOUT_MS }, async () => {
    let out = ''
    const { ok, error } = await settle(sbx.commands.run('echo ready; sleep 30', { timeoutMs: 3_000, onStdout: (d) => { out += d } }))
    assert.equal(out, 'ready\n')
    assert.equal(ok, false)
    assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`)
  })

  test('envs option sets the environment', { timeout: TEST_TIMEOUT_MS }, async () => {
    const result = await sbx.commands.run('printf "%s|%s" "$ROOST_A" "$ROOST_B"', {
      envs: { ROOST_A: 'alpha beta', ROOST_B: 'x=y' },
    })
    assert.equal(result.stdout, 'alpha beta|x=y')
  })

  test('cwd option sets the working directory', { timeout: TEST_TIMEOUT_MS }, async () => {
    const result = await sbx.commands.run('pwd; ls -a', { cwd: dir })
    assert.equal(result.stdout.split('\n')[0], dir)
  })

  test('cwd that does not exist is rejected', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { ok } = await settle(sbx.commands.run('pwd', { cwd: `${dir}/missing` }))
    assert.equal(ok, false)
  })

  test('background run returns a handle; kill() ends it and wait() rejects', { timeout: TEST_TIMEOUT_MS }, async () => {
    const handle = await backgroundReady('sleep 30')
    assert.ok(Number.isInteger(handle.pid) && handle.pid > 0, `pid ${handle.pid}`)
    assert.equal(handle.exitCode, undefined, 'still running')

    assert.equal(await handle.kill(), true)
    // The SDK's wait() throws CommandExitError for any non-zero exit; a
    // SIGKILLed process ends with exit code -1.
    const { ok, error } = await settle(within(handle.wait(), 5_000, 'wait() after kill'))
    assert.equal(ok, false, 'wait() of a killed command must reject')
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.equal(error.exitCode, -1)
    assert.equal(handle.exitCode, -1)
  })

  test('kill() of an unknown pid returns false', { timeout: TEST_TIMEOUT_MS }, async () => {
    assert.equal(await sbx.commands.kill(999_999), false)
  })

  // The SDK documents kill() as "false if the command was not found"; a
  // signal to a process that has ended answers not_found, as upstream does.
  test('kill() of a command that already ended returns false', { timeout: TEST_TIMEOUT_MS }, async () => {
    const handle = await background('true')
    await within(handle.wait(), 5_000, 'wait()')
    assert.equal(handle.exitCode, 0)
    assert.equal(await sbx.commands.kill(handle.pid), false)
    assert.equal(await handle.kill(), false, 'the handle\'s kill() too')
    const { ok, error } = await settle(sbx.commands.sendStdin(handle.pid, 'late'))
    assert.equal(ok, false, 'sendStdin() to an ended command must reject')
    assert.ok(error instanceof NotFoundError, `expected NotFoundError, got ${error}`)
  })

  test('onStdout and onStderr receive the output as it is produced', { timeout: TEST_TIMEOUT_MS }, async () => {
    const out = []
    const err = []
    const result = await sbx.commands.run('for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.05; done', {
      onStdout: (data) => out.push(data),
      onStderr: (data) => err.push(data),
    })
    assert.equal(out.join(''), 'out1\nout2\nout3\n')
    assert.equal(err.join(''), 'err1\nerr2\nerr3\n')
    assert.ok(out.length >= 2, `expected several stdout chunks, got ${JSON.stringify(out)}`)
    assert.equal(result.stdout, out.join(''))
    assert.equal(result.stderr, err.join(''))
  })

  test('list() shows a running background command', { timeout: TEST_TIMEOUT_MS }, async () => {
    const handle = await backgroundReady('sleep 30', { envs: { ROOST_LIST: 'yes' }, cwd: dir })

    const entry = (await sbx.commands.list()).find((p) => p.pid === handle.pid)
    assert.ok(entry, `pid ${handle.pid} missing from list()`)
    assert.equal(entry.cmd, '/bin/bash')
    assert.deepEqual(entry.args, ['-l', '-c', 'echo ready; sleep 30'])
    assert.equal(entry.envs.ROOST_LIST, 'yes')
    assert.equal(entry.cwd, dir)

    await handle.kill()
    await settle(within(handle.wait(), 5_000, 'wait() after kill'))
    const pids = (await sbx.commands.list()).map((p) => p.pid)
    assert.ok(!pids.includes(handle.pid), 'a finished command is no longer listed')
  })

  test('connect(pid) attaches to a running command', { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = await background('read line; echo got:$line', { stdin: true })
    await first.disconnect()

    const seen = []
    const second = await sbx.commands.connect(first.pid, { onStdout: (d) => seen.push(d), timeoutMs: TEST_TIMEOUT_MS })
    assert.equal(second.pid, first.pid)
    await second.sendStdin('via-connect\n')
    const result = await within(second.wait(), 5_000, 'wait() of the connected handle')
    assert.equal(result.exitCode, 0)
    assert.equal(result.stdout, 'got:via-connect\n')
    assert.equal(seen.join(''), 'got:via-connect\n')
  })

  test('connect() to an unknown pid throws NotFoundError', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { ok, error } = await settle(sbx.commands.connect(999_999))
    assert.equal(ok, false)
    assert.ok(error instanceof NotFoundError, `expected NotFoundError, got ${error}`)
  })

  test('sendStdin() feeds a command started with stdin: true; closeStdin() ends it', { timeout: TEST_TIMEOUT_MS }, async () => {
    let out = ''
    const handle = await background('cat', { stdin: true, onStdout: (d) => { out += d } })

    await handle.sendStdin('hello\n')
    await waitFor(() => out === 'hello\n', 'cat to echo the first line')
    await sbx.commands.sendStdin(handle.pid, new TextEncoder().encode('world\n'))
    await waitFor(() => out === 'hello\nworld\n', 'cat to echo the second line')

    await handle.closeStdin()
    const result = await within(handle.wait(), 5_000, 'cat to exit after EOF')
    assert.equal(result.exitCode, 0)
    assert.equal(result.stdout, 'hello\nworld\n')
  })

  test('without stdin: true a command reads EOF at once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const result = await within(sbx.commands.run('cat; echo done'), 5_000, 'cat without stdin')
    assert.equal(result.stdout, 'done\n')
  })
})
