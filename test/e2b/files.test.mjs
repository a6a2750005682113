// sbx.files against envd's Filesystem service and /files, through the real
// E2B SDK.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'

import { FileNotFoundError, FileType, FilesystemEventType, NotFoundError } from 'e2b'

import { TEST_TIMEOUT_MS, createSandbox, makeTempDir, settle, sha256, sleep, waitFor } from './helpers.mjs'

describe('files', { timeout: 60_000 }, () => {
  let sbx
  let root
  let n = 0
  // A fresh directory per test, inside this file's temp dir.
  const fresh = async () => {
    const dir = `${root}/t${++n}`
    assert.equal(await sbx.files.makeDir(dir), true)
    return dir
  }

  before(async () => {
    sbx = await createSandbox()
    root = await makeTempDir(sbx, 'files')
  })

  after(async () => {
    if (root) await sbx.files.remove(root)
  })

  test('write a string and read it back as text', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const text = 'hello, roost\nline two — ünïcødé\n'
    const info = await sbx.files.write(`${dir}/hello.txt`, text)
    assert.deepEqual({ path: info.path, name: info.name, type: info.type }, {
      path: `${dir}/hello.txt`,
      name: 'hello.txt',
      type: FileType.FILE,
    })
    assert.equal(await sbx.files.read(`${dir}/hello.txt`), text)

    await sbx.files.write(`${dir}/hello.txt`, 'short')
    assert.equal(await sbx.files.read(`${dir}/hello.txt`), 'short', 'a second write overwrites')
  })

  test('write binary data (ArrayBuffer and Blob) and read it back as bytes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const every = Uint8Array.from({ length: 256 }, (_, i) => i)
    const bytes = new Uint8Array([...every, ...randomBytes(200_000), ...every])
    const want = sha256(bytes)

    await sbx.files.write(`${dir}/buffer.bin`, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
    const fromBuffer = await sbx.files.read(`${dir}/buffer.bin`, { format: 'bytes' })
    assert.ok(fromBuffer instanceof Uint8Array)
    assert.equal(fromBuffer.length, bytes.length)
    assert.equal(sha256(fromBuffer), want)

    await sbx.files.write(`${dir}/blob.bin`, new Blob([bytes]))
    const fromBlob = await sbx.files.read(`${dir}/blob.bin`, { format: 'bytes' })
    assert.equal(sha256(fromBlob), want)

    const sum = await sbx.commands.run(`sha256sum ${dir}/blob.bin`)
    assert.equal(sum.stdout.split(' ')[0], want, 'the bytes on disk match')
  })

  test('an empty file reads back empty as text and as bytes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/empty`, '')
    assert.equal(await sbx.files.read(`${dir}/empty`), '')
    assert.equal((await sbx.files.read(`${dir}/empty`, { format: 'bytes' })).length, 0)
    assert.equal((await sbx.files.getInfo(`${dir}/empty`)).size, 0)
  })

  test('octet-stream and gzip uploads, gzip, stream and blob downloads', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const text = 'compressible line\n'.repeat(5_000)

    await sbx.files.write(`${dir}/octet.txt`, text, { useOctetStream: true })
    assert.equal(await sbx.files.read(`${dir}/octet.txt`), text)

    await sbx.files.write(`${dir}/gzip.txt`, text, { gzip: true })
    assert.equal(await sbx.files.read(`${dir}/gzip.txt`, { gzip: true }), text)
    assert.equal((await sbx.files.getInfo(`${dir}/gzip.txt`)).size, text.length, 'stored decompressed')

    const stream = await sbx.files.read(`${dir}/gzip.txt`, { format: 'stream' })
    const chunks = []
    for await (const chunk of stream) chunks.push(chunk)
    assert.equal(Buffer.concat(chunks).toString(), text)

    const blob = await sbx.files.read(`${dir}/octet.txt`, { format: 'blob' })
    assert.equal(await blob.text(), text)
  })

  test('write several files in one call (array form)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const infos = await sbx.files.write([
      { path: `${dir}/multi/one.txt`, data: 'one' },
      { path: `${dir}/multi/deeper/two.txt`, data: 'two' },
      { path: `${dir}/three.bin`, data: new Uint8Array([3, 3, 3]).buffer },
    ])
    assert.ok(Array.isArray(infos))
    assert.deepEqual(infos.map((i) => [i.path, i.name, i.type]), [
      [`${dir}/multi/one.txt`, 'one.txt', FileType.FILE],
      [`${dir}/multi/deeper/two.txt`, 'two.txt', FileType.FILE],
      [`${dir}/three.bin`, 'three.bin', FileType.FILE],
    ])
    assert.equal(await sbx.files.read(`${dir}/multi/one.txt`), 'one')
    assert.equal(await sbx.files.read(`${dir}/multi/deeper/two.txt`), 'two')
    assert.deepEqual([...await sbx.files.read(`${dir}/three.bin`, { format: 'bytes' })], [3, 3, 3])
  })

  test('list returns entries with name, type and path', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/a.txt`, 'aaaa')
    await sbx.files.makeDir(`${dir}/sub`)
    await sbx.files.write(`${dir}/sub/nested.txt`, 'not listed at depth 1')

    const entries = (await sbx.files.list(dir)).sort((x, y) => x.name.localeCompare(y.name))
    assert.deepEqual(entries.map((e) => [e.name, e.type, e.path]), [
      ['a.txt', FileType.FILE, `${dir}/a.txt`],
      ['sub', FileType.DIR, `${dir}/sub`],
    ])
    assert.equal(entries[0].size, 4)
    assert.ok(entries[0].modifiedTime instanceof Date)

    const deep = (await sbx.files.list(dir, { depth: 2 })).map((e) => e.path).sort()
    assert.deepEqual(deep, [`${dir}/a.txt`, `${dir}/sub`, `${dir}/sub/nested.txt`])
  })

  test('exists is true for a file and a directory, false for a missing path', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/here.txt`, 'x')
    assert.equal(await sbx.files.exists(`${dir}/here.txt`), true)
    assert.equal(await sbx.files.exists(dir), true)
    assert.equal(await sbx.files.exists(`${dir}/nope.txt`), false)
  })

  test('remove deletes a file and a directory tree', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/gone.txt`, 'x')
    await sbx.files.write(`${dir}/tree/a/b.txt`, 'x')

    await sbx.files.remove(`${dir}/gone.txt`)
    assert.equal(await sbx.files.exists(`${dir}/gone.txt`), false)
    await sbx.files.remove(`${dir}/tree`)
    assert.equal(await sbx.files.exists(`${dir}/tree`), false)
  })

  test('makeDir returns true when it creates, false when the directory exists', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    assert.equal(await sbx.files.makeDir(`${dir}/x/y/z`), true, 'creates parents too')
    assert.equal(await sbx.files.makeDir(`${dir}/x/y/z`), false)
    const info = await sbx.files.getInfo(`${dir}/x/y/z`)
    assert.equal(info.type, FileType.DIR)
  })

  test('rename moves a file and returns its new entry', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/old.txt`, 'payload')
    const entry = await sbx.files.rename(`${dir}/old.txt`, `${dir}/new.txt`)
    assert.equal(entry.name, 'new.txt')
    assert.equal(entry.path, `${dir}/new.txt`)
    assert.equal(entry.type, FileType.FILE)
    assert.equal(await sbx.files.exists(`${dir}/old.txt`), false)
    assert.equal(await sbx.files.read(`${dir}/new.txt`), 'payload')
  })

  test('getInfo describes a file and a directory', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    await sbx.files.write(`${dir}/info.txt`, '12345')
    const file = await sbx.files.getInfo(`${dir}/info.txt`)
    assert.equal(file.name, 'info.txt')
    assert.equal(file.path, `${dir}/info.txt`)
    assert.equal(file.type, FileType.FILE)
    assert.equal(file.size, 5)
    assert.match(file.permissions, /^-[rwx-]{9}$/)
    assert.ok(file.owner, 'owner is set')

    const d = await sbx.files.getInfo(dir)
    assert.equal(d.type, FileType.DIR)
    assert.match(d.permissions, /^d[rwx-]{9}$/)
  })

  test('watchDir reports created and written files, and stop() ends the watch', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const events = []
    const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { timeoutMs: TEST_TIMEOUT_MS })
    const seen = (name, ...types) => events.some((e) => e.name === name && types.includes(e.type))
    try {
      await sbx.files.write(`${dir}/created.txt`, 'first')
      await waitFor(() => seen('created.txt', FilesystemEventType.CREATE, FilesystemEventType.WRITE), 'an event for created.txt')

      await sbx.commands.run(`printf more >> ${dir}/created.txt`)
      await waitFor(() => seen('created.txt', FilesystemEventType.WRITE), 'a write event for created.txt')
    } finally {
      await handle.stop()
    }

    await sbx.commands.run(`touch ${dir}/after-stop.txt`)
    await sleep(300)
    assert.ok(!events.some((e) => e.name === 'after-stop.txt'), 'no events after stop()')
  })

  test('watchDir with recursive and includeEntry reports nested paths with entries', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const events = []
    const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { recursive: true, includeEntry: true, timeoutMs: TEST_TIMEOUT_MS })
    try {
      await sbx.files.makeDir(`${dir}/sub`)
      await waitFor(() => events.some((e) => e.name === 'sub'), 'an event for sub')
      await sbx.commands.run(`echo hi > ${dir}/sub/deep.txt`)
      const ev = await waitFor(() => events.find((e) => e.name === 'sub/deep.txt' && e.type === FilesystemEventType.WRITE), 'a write event for sub/deep.txt')
      assert.equal(ev.entry?.type, FileType.FILE)
      assert.equal(ev.entry?.path, `${dir}/sub/deep.txt`)
      assert.equal(events.find((e) => e.name === 'sub').entry?.type, FileType.DIR)
    } finally {
      await handle.stop()
    }
  })

  // Like upstream envd, envd writes a new file in place, so a watcher sees
  // CREATE and WRITE for its name. An existing file is replaced through a
  // temporary .roost-upload-* file that watchers never report, so an
  // overwrite shows up under the destination's name only.
  test('files.write into a watched directory reports only the destination name', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    const events = []
    const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { timeoutMs: TEST_TIMEOUT_MS })
    const seen = (name, type) => events.some((e) => e.name === name && e.type === type)
    try {
      await sbx.files.write(`${dir}/only.txt`, 'data')
      await waitFor(() => seen('only.txt', FilesystemEventType.CREATE) && seen('only.txt', FilesystemEventType.WRITE), 'CREATE and WRITE for only.txt')

      await sbx.files.write(`${dir}/only.txt`, 'overwritten')
      await sbx.files.write(`${dir}/marker.txt`, '')
      await waitFor(() => seen('marker.txt', FilesystemEventType.CREATE), 'CREATE for marker.txt')
      await sleep(200)
    } finally {
      await handle.stop()
    }
    assert.deepEqual([...new Set(events.map((e) => e.name))].sort(), ['marker.txt', 'only.txt'])
    assert.equal(events.find((e) => e.name === 'only.txt').type, FilesystemEventType.CREATE, 'CREATE comes first')
    assert.equal(await sbx.files.read(`${dir}/only.txt`), 'overwritten')
  })

  test('files.write stores metadata that write, getInfo and list report', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    // Header names are case-insensitive, so envd (like upstream) lowercases keys.
    const metadata = { Author: 'mish', purpose: 'conformance test: ~!@#$%^&*()' }
    const want = { author: 'mish', purpose: 'conformance test: ~!@#$%^&*()' }

    const info = await sbx.files.write(`${dir}/tagged.txt`, 'data', { metadata })
    assert.deepEqual(info.metadata, want, 'write() returns the stored metadata')
    assert.deepEqual((await sbx.files.getInfo(`${dir}/tagged.txt`)).metadata, want)
    const listed = (await sbx.files.list(dir)).find((e) => e.name === 'tagged.txt')
    assert.deepEqual(listed?.metadata, want)

    const octet = await sbx.files.write(`${dir}/octet.txt`, 'data', { metadata: { k: 'v' }, useOctetStream: true })
    assert.deepEqual(octet.metadata, { k: 'v' })
    const gz = await sbx.files.write(`${dir}/gz.txt`, 'data', { metadata: { k: 'gz' }, gzip: true })
    assert.deepEqual(gz.metadata, { k: 'gz' })

    const many = await sbx.files.write([
      { path: `${dir}/m1.txt`, data: '1' },
      { path: `${dir}/sub/m2.txt`, data: '2' },
    ], { metadata: { batch: '7' } })
    assert.deepEqual(many.map((i) => i.metadata), [{ batch: '7' }, { batch: '7' }])
    assert.deepEqual((await sbx.files.getInfo(`${dir}/sub/m2.txt`)).metadata, { batch: '7' })

    // Overwriting replaces the metadata with the new request's, none here.
    const plain = await sbx.files.write(`${dir}/tagged.txt`, 'new data')
    assert.equal(plain.metadata, undefined)
    assert.equal((await sbx.files.getInfo(`${dir}/tagged.txt`)).metadata, undefined)
    const retagged = await sbx.files.write(`${dir}/octet.txt`, 'new data', { metadata: { other: 'x' } })
    assert.deepEqual(retagged.metadata, { other: 'x' })
  })

  test('reading a missing file throws FileNotFoundError (a NotFoundError)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dir = await fresh()
    for (const op of [
      () => sbx.files.read(`${dir}/missing.txt`),
      () => sbx.files.read(`${dir}/missing.txt`, { format: 'bytes' }),
      () => sbx.files.getInfo(`${dir}/missing.txt`),
      () => sbx.files.list(`${dir}/missing-dir`),
    ]) {
      const { ok, error } = await settle(op())
      assert.equal(ok, false)
      assert.ok(error instanceof FileNotFoundError, `expected FileNotFoundError, got ${error}`)
      assert.ok(error instanceof NotFoundError)
    }
  })
})
