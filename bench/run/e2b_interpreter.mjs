// Times E2B's @e2b/code-interpreter, unmodified, against roost up: the
// first create of code-interpreter-v1 (which builds it), creates of it
// until their first runCode answers (the first cold, the rest from the
// template's capture), and runCode('1+1') through the
// proxy. Beside it, in the same sandbox: '1+1' sent straight to its
// default kernel from inside (jupyter_client, over ZeroMQ), the kernel's
// own round trip. bench/run sets E2B_API_URL, E2B_SANDBOX_URL,
// E2B_API_KEY, and ROOST_INTERPRETER_MODULES (test/codeinterpreter).
// Prints one JSON line: {"sets": [...], "buildSeconds": N}.
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.env.ROOST_INTERPRETER_MODULES, 'package.json'))
const { Sandbox } = require('@e2b/code-interpreter')

const creates = Number(process.argv[2] || 10)
const runs = Number(process.argv[3] || 200)

let t0 = performance.now()
const sbx = await Sandbox.create({ requestTimeoutMs: 900_000, timeoutMs: 900_000 })
const buildSeconds = (performance.now() - t0) / 1000
try {
  // The first create after the build starts the kernel (cold); the
  // template's capture, with the kernel started, is made in the
  // background after it, and later creates restore it.
  t0 = performance.now()
  const cold = await Sandbox.create({ timeoutMs: 60_000 })
  if ((await cold.runCode('1+1')).text !== '2') throw new Error('runCode in the first create')
  const coldRun = [performance.now() - t0]
  await cold.kill()
  await new Promise((resolve) => setTimeout(resolve, 20_000))
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
import glob, json, os, time
from jupyter_client import BlockingKernelClient
files = sorted(glob.glob('/tmp/roost-kernel-*/connection.json'), key=os.path.getmtime)
c = BlockingKernelClient()
c.load_connection_file(files[0])
c.start_channels()
c.wait_for_ready(timeout=30)
samples = []
for i in range(${runs} + 5):
    t0 = time.perf_counter()
    msg_id = c.execute('1+1')
    while True:
        m = c.get_iopub_msg(timeout=30)
        if m['parent_header'].get('msg_id') == msg_id and m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle':
            break
    if i >= 5:
        samples.append((time.perf_counter() - t0) * 1000)
c.stop_channels()
print(json.dumps(samples))
EOF`, { timeoutMs: 300_000 })
  console.log(JSON.stringify({
    buildSeconds,
    sets: [
      { name: 'interpreter-create-run', unit: 'ms', samples: createRun },
      { name: 'interpreter-create-run-cold', unit: 'ms', samples: coldRun },
      { name: 'interpreter-run-proxy', unit: 'ms', samples: proxied },
      { name: 'interpreter-run-kernel', unit: 'ms', samples: JSON.parse(direct.stdout.trim()) },
    ],
  }))
} finally {
  await sbx.kill()
}
