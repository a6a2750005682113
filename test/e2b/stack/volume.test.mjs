// Volumes with the official E2B JS SDK against `roost up`: Volume.create,
// sandboxes that mount it (Sandbox.create's volumeMounts), a second
// sandbox that finds what the first wrote, the volume content API with
// the volume's token (E2B_VOLUME_API_URL is the control plane's URL), and
// Volume.destroy. Run through test/e2b/run-stack.sh.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { describe, test } from 'node:test'

import { Sandbox, Volume, VolumePathNotFoundError } from 'e2b'

const run = randomUUID().slice(0, 8)

describe('volumes with the E2B SDK', { timeout: 240_000 }, () => {
  test('create, mount, write, remount, content API, destroy', { timeout: 180_000 }, async () => {
    if (!process.env.E2B_VOLUME_API_URL) throw new Error('run through test/e2b/run-stack.sh')
    const name = `vol-${run}`
    const vol = await Volume.create(name)
    assert.equal(vol.name, name)
    assert.ok(vol.token, 'the volume has a content token')
    const sandboxes = []
    try {
      const a = await Sandbox.create('base', { volumeMounts: { '/mnt/vol': vol }, timeoutMs: 60_000, metadata: { suite: run } })
      sandboxes.push(a)
      await a.files.write('/mnt/vol/hello.txt', 'from a')
      const r = await a.commands.run('mkdir /mnt/vol/dir && echo nested > /mnt/vol/dir/n && stat -c %U /mnt/vol/hello.txt')
      assert.equal(r.stdout, 'user\n')

      // One writer at a time: the refusal names the sandbox that holds it.
      await assert.rejects(Sandbox.create('base', { volumeMounts: { '/x': name }, metadata: { suite: run } }),
        (e) => e.message.includes(a.sandboxId))
      await assert.rejects(Volume.destroy(vol.volumeId), (e) => e.message.includes(a.sandboxId))
      await a.kill()

      const b = await Sandbox.create('base', { volumeMounts: { '/home/user/data': name }, timeoutMs: 60_000, metadata: { suite: run } })
      sandboxes.push(b)
      assert.equal(await b.files.read('/home/user/data/hello.txt'), 'from a')

      // The content API, with the volume's token.
      const names = (await vol.list('/')).map((e) => `${e.name}:${e.type}`).sort()
      assert.deepEqual(names.filter((n) => !n.startsWith('lost+found')), ['dir:directory', 'hello.txt:file'])
      assert.equal(await vol.readFile('/dir/n'), 'nested\n')
      const st = await vol.writeFile('/api.txt', 'from the api', { uid: 1000, gid: 1000 })
      assert.equal(st.path, '/api.txt')
      assert.equal(st.size, 12)
      assert.ok(st.mtime instanceof Date)
      assert.equal(await b.files.read('/home/user/data/api.txt'), 'from the api')
      const bytes = new Uint8Array([0, 1, 2, 254, 255])
      await vol.writeFile('/bin.dat', bytes.buffer)
      assert.deepEqual(await vol.readFile('/bin.dat', { format: 'bytes' }), bytes)
      await vol.makeDir('/made/deep', { force: true })
      assert.equal(await vol.exists('/made/deep'), true)
      assert.equal((await vol.getInfo('/made')).type, 'directory')
      await vol.remove('/made')
      assert.equal(await vol.exists('/made'), false)
      await assert.rejects(vol.readFile('/nope.txt'), VolumePathNotFoundError)
      await assert.rejects(new Volume(vol.volumeId, name, 'vol_not-the-token').list('/'))

      const again = await Volume.connect(vol.volumeId)
      assert.equal(again.token, vol.token)
      assert.ok((await Volume.list()).some((v) => v.volumeId === vol.volumeId && v.name === name))
      await b.kill()
    } finally {
      for (const s of sandboxes) await s.kill().catch(() => {})
      await Volume.destroy(vol.volumeId).catch(() => {})
    }
    assert.equal(await Volume.destroy(vol.volumeId), false)
    assert.ok(!(await Volume.list()).some((v) => v.volumeId === vol.volumeId))
  })
})
