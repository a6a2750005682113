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

  test('a matplotlib bar chart gives its chart data', async () => {
    const ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.bar(["a", "b"], [3, 5], label="n")\nplt.title("counts")\nplt.show()')
    const chart = ex.results[0].chart
    assert.equal(chart.type, 'bar')
    assert.equal(chart.title, 'counts')
    assert.deepEqual(chart.elements, [{ label: 'a', value: '3', group: 'n' }, { label: 'b', value: '5', group: 'n' }])
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

  test('a bash context: its variables and working directory last', async () => {
    const ctx = await sbx.createCodeContext({ language: 'bash' })
    assert.equal(ctx.language, 'bash')
    await sbx.runCode('n=41; cd /tmp', { context: ctx })
    const ex = await sbx.runCode('echo $((n + 1)) $PWD', { context: ctx })
    assert.deepEqual(ex.logs.stdout, ['42 /tmp\n'])
    assert.equal((await sbx.runCode('false', { context: ctx })).error.name, 'ExitStatus')
    assert.deepEqual((await sbx.runCode('echo "$V"', { language: 'bash', envs: { V: 'one run' } })).logs.stdout, ['one run\n'])
  })

  test('JavaScript and TypeScript contexts: top-level await, imports, the last value', async () => {
    const js = await sbx.createCodeContext({ language: 'js' })
    await sbx.runCode('const os = await import("os"); const n = await Promise.resolve(41)', { context: js })
    assert.equal((await sbx.runCode('n + 1', { context: js })).text, '42')
    assert.equal((await sbx.runCode('import { join } from "path"; join("a", "b")', { context: js })).text, 'a/b')
    assert.equal((await sbx.runCode('null.x', { context: js })).error.name, 'TypeError')
    const ts = await sbx.createCodeContext({ language: 'ts' })
    const ex = await sbx.runCode('const v: number = 40\ninterface P { v: number }\n({ v: v + 2 } as P).v', { context: ts })
    assert.equal(ex.text, '42')
  })

  test('a Java context (JShell)', async () => {
    const ctx = await sbx.createCodeContext({ language: 'java' })
    await sbx.runCode('int n = 41;', { context: ctx })
    const ex = await sbx.runCode('System.out.println("hi");\nn + 1', { context: ctx })
    assert.equal(ex.text, '42')
    assert.deepEqual(ex.logs.stdout, ['hi\n'])
  })

  test('an unknown language is refused', async () => {
    await assert.rejects(sbx.runCode('1', { language: 'cobol' }), /400/)
  })
}
