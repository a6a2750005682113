// Times E2B's @e2b/code-interpreter, unmodified, against roost up: the
// first create of code-interpreter-v1 (which builds it), creates of it
// until their first runCode answers (cold: booted, the kernel started by
// the create; and restored from the template's capture, the kernel
// started), and runCode('1+1') through the proxy. Beside it, in the same
// sandbox: the same request sent to the interpreter from inside, over
// loopback (the server and its kernel without the way into the sandbox).
// bench/run sets E2B_API_URL, E2B_SANDBOX_URL,
// E2B_API_KEY, and ROOST_INTERPRETER_MODULES (test/codeinterpreter).
// Prints one JSON line: {"sets": [...], "buildSeconds": N}.
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.env.ROOST_INTERPRETER_MODULES, 'package.json'))
const { Sandbox } = require('@e2b/code-interpreter')

const creates = Number(process.argv[2] || 10)
const runs = Number(process.argv[3] || 200)
const colds = Math.min(5, creates)

// createCold creates code-interpreter-v1 with memoryMB of memory through
// E2B's create route and connects the package to it.
async function createCold(memoryMB) {
  const resp = await fetch(`${process.env.E2B_API_URL}/sandboxes`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': process.env.E2B_API_KEY },
    body: JSON.stringify({ templateID: 'code-interpreter-v1', timeout: 60, memoryMB }),
  })
  if (resp.status !== 201) throw new Error(`cold create: ${resp.status} ${await resp.text()}`)
  const { sandboxID } = await resp.json()
  return Sandbox.connect(sandboxID)
}

let t0 = performance.now()
const sbx = await Sandbox.create({ requestTimeoutMs: 900_000, timeoutMs: 900_000 })
const buildSeconds = (performance.now() - t0) / 1000
try {
  // The create that built the template has the template's capture made
  // in the background (a sandbox of its own, its kernel started, then
  // dumped), and later creates restore it. A create of a shape with no
  // capture yet boots and starts its kernel (cold), and has one made for
  // its shape: each cold create is of a new shape (roost's memoryMB on
  // E2B's create route, which the package does not send), after the
  // last capture is done, so that none shares the CPU with one.
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20_000))
  await settle()
  const coldRun = []
  for (let i = 0; i < colds; i++) {
    t0 = performance.now()
    const s = await createCold(1000 + i)
    const ex = await s.runCode('1+1')
    coldRun.push(performance.now() - t0)
    if (ex.text !== '2') throw new Error(`runCode('1+1') in a cold create gave ${ex.text}`)
    await s.kill()
    await settle()
  }
  const createRun = []
  for (let i = 0; i < creates; i++) {
    t0 = performance.now()
    const s = await Sandbox.create({ timeoutMs: 60_000 })
    const ex = await s.runCode('1+1')
    createRun.push(performance.now() - t0)
    if (ex.text !== '2') throw new Error(`runCode('1+1') gave ${ex.text}`)
    await s.kill()
  }
  for (let i = 0; i < 5; i++) await sbx.runCode('1+1') // warm connections
  const proxied = []
  for (let i = 0; i < runs; i++) {
    t0 = performance.now()
    await sbx.runCode('1+1')
    proxied.push(performance.now() - t0)
  }
  const direct = await sbx.commands.run(`/usr/bin/python3 - <<'EOF'
import http.client, json, time
c = http.client.HTTPConnection('127.0.0.1', 49999)
samples = []
for i in range(${runs} + 5):
    t0 = time.perf_counter()
    c.request('POST', '/execute', body=json.dumps({'code': '1+1'}), headers={'Content-Type': 'application/json'})
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or b'end_of_execution' not in body:
        raise SystemExit('execute: %d %r' % (r.status, body))
    if i >= 5:
        samples.append((time.perf_counter() - t0) * 1000)
print(json.dumps(samples))
EOF`, { timeoutMs: 300_000 })
  console.log(JSON.stringify({
    buildSeconds,
    sets: [
      { name: 'interpreter-create-run', unit: 'ms', samples: createRun },
      { name: 'interpreter-create-run-cold', unit: 'ms', samples: coldRun },
      { name: 'interpreter-run-proxy', unit: 'ms', samples: proxied },
      { name: 'interpreter-run-inside', unit: 'ms', samples: JSON.parse(direct.stdout.trim()) },
    ],
  }))
} finally {
  await sbx.kill()
}
