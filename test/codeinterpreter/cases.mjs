// The cases every run of @e2b/code-interpreter goes through, against a
// sandbox of the code interpreter (the package unmodified): run.sh's
// against the server alone, run-stack.sh's against roost up.
import { test } from 'node:test'
import assert from 'node:assert/strict'

export function defineTests(sbx) {
  test('state persists between runs of a context', async () => {
    await sbx.runCode('x = 1')
    const ex = await sbx.runCode('x + 1')
    assert.equal(ex.text, '2')
    assert.equal(ex.error, undefined)
  })

  test('stdout and stderr reach the callbacks and the logs', async () => {
    const out = []
    const err = []
    const ex = await sbx.runCode('import sys\nprint("hello é🎉")\nprint("oops", file=sys.stderr)', {
      onStdout: (m) => out.push(m.line),
      onStderr: (m) => err.push(m.line),
    })
    assert.deepEqual(out, ['hello é🎉\n'])
    assert.deepEqual(err, ['oops\n'])
    assert.deepEqual(ex.logs.stdout, ['hello é🎉\n'])
  })

  test('an exception is an error with its name, value and traceback', async () => {
    const ex = await sbx.runCode('1 / 0')
    assert.equal(ex.error.name, 'ZeroDivisionError')
    assert.equal(ex.error.value, 'division by zero')
    assert.match(ex.error.traceback, /1 \/ 0/)
  })

  test('a matplotlib plot is a PNG result', async () => {
    const ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 4])\nplt.show()')
    assert.equal(ex.results.length, 1)
    assert.ok(Buffer.from(ex.results[0].png, 'base64').subarray(1, 4).toString() === 'PNG')
    assert.ok(ex.results[0].formats().includes('png'))
  })

  test('a pandas frame is an HTML result with its data, the main one', async () => {
    const ex = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": [3, 4]})')
    assert.equal(ex.results.length, 1)
    assert.ok(ex.results[0].isMainResult)
    assert.match(ex.results[0].html, /<table/)
    assert.deepEqual(ex.results[0].data, { a: [1, 2], b: [3, 4] })
  })

  test('a context of its own: its cwd, its state, restart clears it, remove ends it', async () => {
    const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
    assert.equal(ctx.language, 'python')
    assert.equal(ctx.cwd, '/tmp')
    await sbx.runCode('mine = "ctx"', { context: ctx })
    assert.equal((await sbx.runCode('import os\nos.getcwd() + " " + mine', { context: ctx })).text, '/tmp ctx')
    assert.equal((await sbx.runCode('"mine" in dir()')).text, 'False')
    const list = await sbx.listCodeContexts()
    assert.equal(list[list.length - 1].id, ctx.id)
    await sbx.restartCodeContext(ctx)
    assert.equal((await sbx.runCode('"mine" in dir()', { context: ctx })).text, 'False')
    await sbx.removeCodeContext(ctx)
    await assert.rejects(sbx.runCode('1', { context: ctx }), /not found/)
  })

  test('two contexts run in parallel without sharing state', async () => {
    const [a, b] = await Promise.all([sbx.createCodeContext(), sbx.createCodeContext()])
    const started = Date.now()
    await Promise.all([
      sbx.runCode('import time\nv = "a"\ntime.sleep(1)', { context: a }),
      sbx.runCode('import time\nv = "b"\ntime.sleep(1)', { context: b }),
    ])
    assert.ok(Date.now() - started < 1900, 'the two runs took turns')
    assert.equal((await sbx.runCode('v', { context: a })).text, 'a')
    assert.equal((await sbx.runCode('v', { context: b })).text, 'b')
  })

  test('a run past its timeout is interrupted, and the context runs on', async () => {
    await sbx.runCode('kept = 5')
    await assert.rejects(sbx.runCode('while True: pass', { timeoutMs: 1000 }), (e) => e.name === 'TimeoutError')
    assert.equal((await sbx.runCode('kept')).text, '5')
  })

  test('env vars for one run', async () => {
    assert.equal((await sbx.runCode('import os\nos.environ["ROOST_CI"]', { envs: { ROOST_CI: 'set' } })).text, 'set')
    assert.equal((await sbx.runCode('str(os.environ.get("ROOST_CI"))')).text, 'None')
  })

  test('an R context (IRkernel)', async () => {
    const ctx = await sbx.createCodeContext({ language: 'r' })
    assert.equal(ctx.language, 'r')
    await sbx.runCode('x <- 40', { context: ctx })
    const ex = await sbx.runCode('x + 2', { context: ctx })
    assert.equal(ex.results[0].text, '[1] 42')
    assert.equal((await sbx.runCode('1:3', { language: 'r' })).results[0].text, '[1] 1 2 3')
  })

  test('an unknown language is refused', async () => {
    await assert.rejects(sbx.runCode('1', { language: 'cobol' }), /400/)
  })
}
