// Times `sbx.commands.run('true')` with the official E2B JS SDK against
// roost, as a user of E2B sees it. bench/run starts `roost up` and runs
// this with E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY set and
// ROOST_E2B_MODULES naming the directory whose node_modules holds the SDK
// (test/e2b). Prints one samples set as JSON on stdout.
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.env.ROOST_E2B_MODULES, 'package.json'))
const { Sandbox } = require('e2b')

const n = Number(process.argv[2] || 100)
const sbx = await Sandbox.create('base', { timeoutMs: 300_000 })
try {
  for (let i = 0; i < 5; i++) await sbx.commands.run('true') // warm connections
  const samples = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await sbx.commands.run('true')
    samples.push(performance.now() - t0)
  }
  console.log(JSON.stringify({ name: 'exec-e2b', unit: 'ms', samples }))
} finally {
  await sbx.kill()
}
