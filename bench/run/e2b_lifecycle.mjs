// Times a sandbox's whole short life as an E2B user sees it: create, the
// first command, kill, with the create sent to E2B's legacy route
// (POST /sandboxes, what SDKs before JS 2.51.0 and the Python SDK call)
// and to the /v2 route (POST /v2/sandboxes), alternating so both see the
// same machine. The command and kill go through the official JS SDK
// (Sandbox.connect, commands.run, kill). Env as e2b_exec.mjs. Prints one
// JSON line: {"sets": [samples set, samples set]}.
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.env.ROOST_E2B_MODULES, 'package.json'))
const { Sandbox } = require('e2b')

const n = Number(process.argv[2] || 20)
const api = process.env.E2B_API_URL
const routes = { 'lifecycle-legacy': '/sandboxes', 'lifecycle-v2': '/v2/sandboxes' }

async function life(route) {
  const t0 = performance.now()
  const resp = await fetch(api + route, {
    method: 'POST',
    headers: { 'X-API-Key': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ templateID: 'base', timeout: 300 }),
  })
  if (resp.status !== 201) throw new Error(`POST ${route}: ${resp.status} ${await resp.text()}`)
  const { sandboxID } = await resp.json()
  const sbx = await Sandbox.connect(sandboxID)
  await sbx.commands.run('true')
  await sbx.kill()
  return performance.now() - t0
}

const samples = Object.fromEntries(Object.keys(routes).map((k) => [k, []]))
for (const name of Object.keys(routes)) await life(routes[name]) // warm both paths
for (let i = 0; i < n; i++) {
  for (const [name, route] of Object.entries(routes)) samples[name].push(await life(route))
}
console.log(JSON.stringify({ sets: Object.entries(samples).map(([name, s]) => ({ name, unit: 'ms', samples: s })) }))
