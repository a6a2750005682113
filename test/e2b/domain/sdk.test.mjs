// The official E2B JS SDK against roost in domain + TLS mode: nothing but
// E2B_DOMAIN and E2B_API_KEY (plus trust in roost's CA and the resolve.mjs
// preload that points the domain at roost). ROOST_TEST_SDK picks the SDK
// package: e2b (newest 2.x) or e2b-v1 (newest 1.x). Run through run.sh.

import assert from 'node:assert/strict'
import tls from 'node:tls'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'

const sdkName = process.env.ROOST_TEST_SDK || 'e2b'
const { Sandbox } = await import(sdkName)
const domain = process.env.E2B_DOMAIN
const key = process.env.E2B_API_KEY
const api = `https://api.${domain}`
const T = 60_000

async function waitFor(check, what, ms = 15_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

// rest calls roost's REST API at api.{domain}, as the SDK does.
async function rest(method, path) {
  const res = await fetch(api + path, { method, headers: { 'X-API-Key': key } })
  return { status: res.status, body: await res.text() }
}

describe(`E2B SDK ${sdkName} with only E2B_DOMAIN=${domain}`, { timeout: 240_000 }, () => {
  let sbx
  before(async () => {
    assert.ok(domain && key, 'run through test/e2b/domain/run.sh')
    assert.ok(!process.env.E2B_API_URL && !process.env.E2B_SANDBOX_URL, 'E2B_API_URL and E2B_SANDBOX_URL must be unset')
    sbx = await Sandbox.create('base', { timeoutMs: 180_000, secure: true, metadata: { suite: 'domain' } })
  })
  after(async () => { await sbx?.kill().catch(() => {}) })

  test('the sandbox lives under the domain', async () => {
    assert.equal(sbx.sandboxDomain ?? domain, domain)
    assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.${domain}`)
    const info = JSON.parse((await rest('GET', `/sandboxes/${sbx.sandboxId}`)).body)
    assert.equal(info.domain, domain)
  })

  test('a command runs', { timeout: T }, async () => {
    const r = await sbx.commands.run('echo "hello $((6*7))"; id -un')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'hello 42\nuser\n')
  })

  test('a file is written and read back', { timeout: T }, async () => {
    const text = 'domain mode ' + 'x'.repeat(100_000)
    await sbx.files.write('/home/user/domain.txt', text)
    assert.equal(await sbx.files.read('/home/user/domain.txt'), text)
  })

  test('a pty echoes', { timeout: T }, async () => {
    let out = ''
    const dec = new TextDecoder()
    const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d) } })
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo pty-$((6*7))\n'))
    await waitFor(() => out.includes('pty-42'), 'pty echo')
    assert.equal(await sbx.pty.kill(pty.pid), true)
  })

  test('signed file URLs reach the sandbox at {port}-{id}.{domain}', { timeout: T }, async () => {
    const up = await sbx.uploadUrl('/home/user/signed.txt', { useSignatureExpiration: 10_000 })
    assert.ok(up.startsWith(`https://49983-${sbx.sandboxId}.${domain}/files?`), up)
    const form = new FormData()
    form.append('file', new Blob(['signed upload']), 'signed.txt')
    const put = await fetch(up, { method: 'POST', body: form })
    assert.equal(put.status, 200, await put.text())
    const down = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 10_000 })
    const got = await fetch(down)
    assert.equal(got.status, 200)
    assert.equal(await got.text(), 'signed upload')
    const forged = new URL(down)
    forged.searchParams.set('path', '/home/user/domain.txt')
    assert.equal((await fetch(forged)).status, 401, 'a signature for another path')
  })

  test('signed file URLs reach the sandbox in header mode (E2B_SANDBOX_URL) too', { timeout: T }, async (t) => {
    const viaHeaders = await Sandbox.connect(sbx.sandboxId, { apiUrl: api, sandboxUrl: api })
    const down = await viaHeaders.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 10_000 })
    if (!down.startsWith(`${api}/files?`)) {
      t.skip(`this SDK has no header mode (its URL is ${down.split('?')[0]})`)
      return
    }
    const got = await fetch(down)
    assert.equal(got.status, 200)
    assert.equal(await got.text(), 'signed upload')
    const up = await viaHeaders.uploadUrl('/home/user/header.txt', { useSignatureExpiration: 10_000 })
    const form = new FormData()
    form.append('file', new Blob(['header upload']), 'header.txt')
    assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
    assert.equal(await sbx.files.read('/home/user/header.txt'), 'header upload')
  })

  test('a server in the sandbox answers at https://{port}-{id}.{domain}', { timeout: T }, async () => {
    await sbx.commands.run('echo served > /tmp/index.html; cd /tmp && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &')
    const url = `https://${sbx.getHost(8000)}/index.html`
    const body = await waitFor(async () => {
      const r = await fetch(url).catch(() => null)
      return r?.status === 200 ? r.text() : null
    }, url)
    assert.equal(body, 'served\n')
  })

  test('a WebSocket upgrade passes through TLS', { timeout: T }, async () => {
    const head = await new Promise((resolve, reject) => {
      const s = tls.connect({ host: `api.${domain}`, servername: `api.${domain}`, port: 443, ALPNProtocols: ['http/1.1'] }, () => {
        s.write(`GET /v1/sandboxes/${sbx.sandboxId}/pty?cols=80&rows=24 HTTP/1.1\r\nHost: api.${domain}\r\nX-API-Key: ${key}\r\n` +
          'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
      })
      let got = ''
      s.on('data', (d) => {
        got += d.toString('latin1')
        if (got.includes('\r\n\r\n')) { s.destroy(); resolve(got) }
      })
      s.on('error', reject)
    })
    assert.match(head, /^HTTP\/1\.1 101 /)
  })

  test('pause, then connect resumes', { timeout: 120_000 }, async () => {
    await sbx.commands.run('echo kept > /home/user/kept.txt')
    assert.equal((await rest('POST', `/sandboxes/${sbx.sandboxId}/pause`)).status, 204)
    assert.equal(JSON.parse((await rest('GET', `/sandboxes/${sbx.sandboxId}`)).body).state, 'paused')
    let again
    if (typeof Sandbox.prototype.pause === 'function') {
      again = await Sandbox.connect(sbx.sandboxId) // 2.x: connect resumes a paused sandbox
    } else {
      // 1.x has no pause in its API: resume through E2B's legacy route.
      assert.equal((await rest('POST', `/sandboxes/${sbx.sandboxId}/resume`)).status, 201)
      again = await Sandbox.connect(sbx.sandboxId)
    }
    const r = await again.commands.run('cat /home/user/kept.txt')
    assert.equal(r.stdout, 'kept\n')
  })

  test('kill', { timeout: T }, async () => {
    await sbx.kill()
    assert.equal((await rest('GET', `/sandboxes/${sbx.sandboxId}`)).status, 404)
    sbx = undefined
  })
})
