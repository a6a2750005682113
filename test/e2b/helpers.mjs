// Shared helpers for the E2B SDK conformance suite. Not a test file itself:
// node --test only runs the *.test.mjs files that run.sh names.

import { createHash, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'

import { Sandbox } from 'e2b'

export { sleep }

// Bound for one test; the whole suite stays well under a minute.
export const TEST_TIMEOUT_MS = 20_000

// Connects to the sandbox under test. run.sh sets E2B_DEBUG=true, which makes
// the SDK skip the control-plane API and talk to envd at localhost:49983,
// assuming envd version 99.99.99 (every feature gate open).
export async function createSandbox() {
  if (process.env.E2B_DEBUG !== 'true' && !process.env.E2B_API_KEY) {
    throw new Error('E2B_DEBUG is not "true": run this suite through test/e2b/run.sh')
  }
  return Sandbox.create()
}

// Makes a fresh directory for one test file through the SDK, under
// $ROOST_E2B_TMPDIR (run.sh's per-run directory) or /tmp.
export async function makeTempDir(sbx, label) {
  const base = process.env.ROOST_E2B_TMPDIR || '/tmp'
  const dir = `${base}/roost-e2b-${label}-${randomUUID().slice(0, 8)}`
  if (!(await sbx.files.makeDir(dir))) throw new Error(`temp dir ${dir} already existed`)
  return dir
}

// Polls check() until it returns a truthy value, or fails after timeoutMs
// naming what it waited for. Returns check()'s value.
export async function waitFor(check, what, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}

// Rejects if promise does not settle within ms, so a stuck stream fails the
// test with a message instead of hanging it until the runner's timeout.
export function within(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// Settles to {ok, value} or {ok: false, error}, for asserting on how a
// promise settles without try/catch noise.
export async function settle(promise) {
  try {
    return { ok: true, value: await promise }
  } catch (error) {
    return { ok: false, error }
  }
}

export function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex')
}
