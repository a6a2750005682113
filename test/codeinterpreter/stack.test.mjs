// E2B's @e2b/code-interpreter, unmodified, against roost up (run-stack.sh
// points E2B_API_URL and E2B_SANDBOX_URL at it): the first create of its
// template, code-interpreter-v1, builds it; then every case of cases.mjs
// through the proxy.
import { after } from 'node:test'
import { Sandbox } from '@e2b/code-interpreter'
import { defineTests } from './cases.mjs'

const started = Date.now()
const sbx = await Sandbox.create({ requestTimeoutMs: 900_000, timeoutMs: 600_000 })
console.log(`first create of code-interpreter-v1 (its build included): ${((Date.now() - started) / 1000).toFixed(1)} s`)
const again = Date.now()
const second = await Sandbox.create({ timeoutMs: 60_000, envs: { ROOST_SANDBOX_ENV: 'from-create' } })
const first = await second.runCode('1 + 1')
console.log(`a create of the built template until its first runCode answers: ${Date.now() - again} ms (${first.text})`)
// The sandbox's env vars reach its kernels.
const env = await second.runCode('import os\nos.environ.get("ROOST_SANDBOX_ENV")')
if (env.text !== 'from-create') throw new Error(`the sandbox's env var in a kernel: ${env.text}`)
await second.kill()
after(() => sbx.kill())

defineTests(sbx)
