// The official E2B JS SDK builds templates against `roost up`: Template()
// from the base template with apt packages, a copied file, envs, a workdir,
// a command and a start command with its ready check; then a sandbox of it
// whose server answers through the proxy on the first request. Run through
// test/e2b/run-stack.sh.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'

import { BuildError, Sandbox, Template, waitForPort } from 'e2b'

const run = randomUUID().slice(0, 8)

describe('template builds with the E2B SDK', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'roost-sdk-template-'))
  const sandboxes = []
  after(async () => {
    await Promise.all(sandboxes.map((s) => s.kill().catch(() => {})))
    rmSync(dir, { recursive: true, force: true })
  })

  test('fromTemplate(base) with aptInstall, copy, envs, workdir, runCmd and a start command', { timeout: 240_000 }, async () => {
    if (!process.env.E2B_API_KEY || !process.env.E2B_SANDBOX_URL) throw new Error('run through test/e2b/run-stack.sh')
    writeFileSync(join(dir, 'greeting.txt'), `hello from the build context ${run}\n`)
    const template = Template({ fileContextPath: dir })
      .fromTemplate('base')
      .aptInstall(['cowsay'])
      .copy('greeting.txt', '/home/user/x')
      .setEnvs({ ROOST_TEMPLATE_ENV: `env ${run}` })
      .setWorkdir('/home/user/www')
      .runCmd(`echo "served ${run}" > /home/user/www/index.html`)
      .setStartCmd('python3 -m http.server 8000', waitForPort(8000))

    const logs = []
    const started = Date.now()
    const info = await Template.build(template, 'sdk-test', { onBuildLogs: (e) => logs.push(e) })
    console.log(`built sdk-test in ${((Date.now() - started) / 1000).toFixed(1)} s, ${logs.length} log entries`)
    for (const e of logs) console.log(`  ${e.level} ${e.message}`)
    assert.equal(info.name ?? info.alias, 'sdk-test')
    assert.ok(logs.some((e) => /apt-get install/.test(e.message)), 'the build log shows the apt step')

    const sbx = await Sandbox.create('sdk-test', { timeoutMs: 120_000, metadata: { suite: run } })
    sandboxes.push(sbx)
    // The start command ran and was ready before create returned: the
    // very first request through the proxy is answered.
    const res = await fetch(`${process.env.E2B_SANDBOX_URL}/proxy/${sbx.sandboxId}/8000/index.html`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), `served ${run}\n`)

    assert.equal(await sbx.files.read('/home/user/x'), `hello from the build context ${run}\n`)
    const r = await sbx.commands.run('echo "$ROOST_TEMPLATE_ENV"; pwd; /usr/games/cowsay moo | grep -c moo; git --version | cut -d" " -f1-2')
    assert.equal(r.stdout, `env ${run}\n/home/user/www\n1\ngit version\n`)
  })

  test('a failing runCmd fails the build with a BuildError naming the step', { timeout: 120_000 }, async () => {
    const template = Template()
      .fromTemplate('base')
      .runCmd('echo fine')
      .runCmd(`echo "boom ${run}" >&2; exit 3`)
    await assert.rejects(Template.build(template, 'sdk-test-fails', { onBuildLogs: () => {} }), (e) => {
      assert.ok(e instanceof BuildError, `${e?.constructor?.name}: ${e?.message}`)
      assert.match(e.message, /step 2/)
      assert.match(e.message, /exit (code|status) 3/)
      assert.match(e.message, new RegExp(`boom ${run}`))
      return true
    })
  })
})
