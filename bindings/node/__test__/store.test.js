'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { floyd, throwsCode, rejectsCode, tmpdir, obj } = require('./helpers')
const { Store } = floyd

test('create sets uid, resourceVersion, generation and creationTimestamp; get returns it', () => {
  const s = Store.memory()
  const o = s.create({ kind: 'Widget', metadata: { name: 'a', labels: { app: 'web' } }, spec: { size: 1 } })
  assert.equal(o.kind, 'Widget')
  assert.equal(o.metadata.namespace, 'default')
  assert.equal(o.metadata.generation, 1)
  assert.match(o.metadata.uid, /^[0-9a-f-]{36}$/)
  assert.match(o.metadata.resourceVersion, /^\d+$/)
  assert.match(o.metadata.creationTimestamp, /^\d{4}-\d\d-\d\dT/)
  assert.deepEqual(s.get('Widget', 'default/a'), o)
  assert.equal(s.get('Widget', 'default/missing'), null)
  assert.equal(s.get('NoSuchKind', 'default/a'), null)
  assert.equal(s.resourceVersion(), Number(o.metadata.resourceVersion))
  s.close()
})

test('create of an existing key is AlreadyExists', () => {
  const s = Store.memory()
  s.create(obj('a'))
  throwsCode(() => s.create(obj('a')), 'AlreadyExists')
})

test('generateName makes a name', () => {
  const s = Store.memory({ seed: 7 })
  const o = s.create({ kind: 'Widget', metadata: { generateName: 'web-' }, spec: {} })
  assert.match(o.metadata.name, /^web-[a-z0-9]+$/)
})

test('list filters by namespace and label selector (string and object forms)', () => {
  const s = Store.memory()
  s.create({ kind: 'Widget', metadata: { name: 'a', namespace: 'ns1', labels: { app: 'web', tier: 'fe' } }, spec: {} })
  s.create({ kind: 'Widget', metadata: { name: 'b', namespace: 'ns1', labels: { app: 'db' } }, spec: {} })
  s.create({ kind: 'Widget', metadata: { name: 'c', namespace: 'ns2', labels: { app: 'web' } }, spec: {} })
  const all = s.list('Widget')
  assert.deepEqual(all.items.map((o) => o.metadata.name), ['a', 'b', 'c'])
  assert.equal(all.resourceVersion, s.resourceVersion())
  assert.deepEqual(s.list('Widget', { namespace: 'ns1' }).items.map((o) => o.metadata.name), ['a', 'b'])
  assert.deepEqual(s.list('Widget', { labelSelector: 'app=web' }).items.map((o) => o.metadata.name), ['a', 'c'])
  assert.deepEqual(s.list('Widget', { labelSelector: 'app in (web,db),!tier' }).items.map((o) => o.metadata.name), ['b', 'c'])
  assert.deepEqual(s.list('Widget', { labelSelector: { matchLabels: { app: 'db' } } }).items.map((o) => o.metadata.name), ['b'])
  assert.deepEqual(
    s.list('Widget', { namespace: 'ns2', labelSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] } }).items.length,
    1,
  )
  assert.deepEqual(s.list('Nothing').items, [])
  assert.deepEqual(s.list('Widget', null).items.length, 3)
})

test('update bumps generation on spec change, keeps status, checks resourceVersion (Conflict)', () => {
  const s = Store.memory()
  const o = s.create(obj('a'))
  const same = s.update({ ...o })
  assert.equal(same.metadata.resourceVersion, o.metadata.resourceVersion, 'a no-op update writes nothing')
  const u = s.update({ ...o, spec: { size: 2 } })
  assert.equal(u.metadata.generation, 2)
  assert.ok(Number(u.metadata.resourceVersion) > Number(o.metadata.resourceVersion))
  throwsCode(() => s.update({ ...o, spec: { size: 3 } }), 'Conflict')
  const noPrecondition = s.update({ kind: 'Widget', metadata: { name: 'a' }, spec: { size: 4 } })
  assert.equal(noPrecondition.metadata.generation, 3)
  throwsCode(() => s.update(obj('missing')), 'NotFound')
  throwsCode(() => s.update(obj('x', { metadata: { namespace: 'other' } })), 'NotFound')
})

test('updateStatus changes only the status, not the generation', () => {
  const s = Store.memory()
  const o = s.create(obj('a'))
  const st = s.updateStatus({ ...o, spec: { size: 99 }, status: { ready: true } })
  assert.deepEqual(st.status, { ready: true })
  assert.deepEqual(st.spec, { size: 1 })
  assert.equal(st.metadata.generation, 1)
  const u = s.update({ ...st, spec: { size: 2 }, status: { ready: false } })
  assert.deepEqual(u.status, { ready: true }, 'update keeps the status')
  throwsCode(() => s.updateStatus({ ...o, status: {} }), 'Conflict')
  throwsCode(() => s.updateStatus(obj('missing', { status: {} })), 'NotFound')
})

test('delete returns the last state; resourceVersion precondition as number or string', () => {
  const s = Store.memory()
  const a = s.create(obj('a'))
  const b = s.create(obj('b'))
  throwsCode(() => s.delete('Widget', 'default/a', Number(a.metadata.resourceVersion) + 1000), 'Conflict')
  throwsCode(() => s.delete('Widget', 'default/a', '1'), 'Conflict')
  const gone = s.delete('Widget', 'default/a', a.metadata.resourceVersion)
  assert.equal(gone.metadata.name, 'a')
  assert.ok(gone.metadata.deletionTimestamp)
  s.delete('Widget', 'default/b', Number(b.metadata.resourceVersion))
  s.create(obj('c'))
  s.delete('Widget', 'default/c')
  assert.equal(s.get('Widget', 'default/a'), null)
  throwsCode(() => s.delete('Widget', 'default/a'), 'NotFound')
  throwsCode(() => s.delete('Nothing', 'default/a'), 'NotFound')
})

test('cluster-scoped kinds are keyed by name', () => {
  const s = Store.memory()
  s.create({ kind: 'Node', metadata: { name: 'host-1' }, spec: {} })
  assert.equal(s.get('Node', 'host-1').metadata.name, 'host-1')
})

test('stats, snapshot, path and closed on a memory store', async () => {
  const s = Store.memory()
  s.create(obj('a'))
  const st = s.stats()
  assert.equal(st.objects, 1)
  assert.equal(st.events, 1)
  assert.equal(st.resourceVersion, s.resourceVersion())
  for (const k of ['segments', 'bytes', 'oldestVersion', 'snapshotVersion', 'truncatedBytes']) assert.equal(typeof st[k], 'number')
  assert.ok(['none', 'batch', 'always'].includes(st.durability))
  const snap = await s.snapshot()
  assert.deepEqual(Object.keys(snap).sort(), ['bytes', 'compactedSegments', 'objects', 'path', 'resourceVersion'])
  assert.equal(snap.path, null)
  assert.equal(snap.objects, 1)
  assert.equal(s.path, null)
  assert.equal(s.closed, false)
  s.close()
  s.close() // idempotent
  assert.equal(s.closed, true)
})

test('every store call after close is ShutDown', async () => {
  const s = Store.memory()
  const o = s.create(obj('a'))
  s.close()
  throwsCode(() => s.create(obj('b')), 'ShutDown')
  throwsCode(() => s.get('Widget', 'default/a'), 'ShutDown')
  throwsCode(() => s.list('Widget'), 'ShutDown')
  throwsCode(() => s.update(o), 'ShutDown')
  throwsCode(() => s.updateStatus(o), 'ShutDown')
  throwsCode(() => s.delete('Widget', 'default/a'), 'ShutDown')
  throwsCode(() => s.watch(), 'ShutDown')
  throwsCode(() => s.stats(), 'ShutDown')
  await rejectsCode(s.snapshot(), 'ShutDown')
  await rejectsCode(s.createAsync(obj('b')), 'ShutDown')
  await rejectsCode(s.updateAsync(o), 'ShutDown')
  await rejectsCode(s.updateStatusAsync(o), 'ShutDown')
  await rejectsCode(s.deleteAsync('Widget', 'default/a'), 'ShutDown')
  assert.equal(typeof s.resourceVersion(), 'number')
})

test('watch: replay from 0, follow the tail, filter by kind, end on timeout', async () => {
  const s = Store.memory()
  s.create(obj('a'))
  s.create({ kind: 'Other', metadata: { name: 'x' }, spec: {} })
  const w = s.watch({ kind: 'Widget', timeout: 0.3 })
  setTimeout(() => {
    const a = s.get('Widget', 'default/a')
    s.update({ ...a, spec: { size: 5 } })
    s.create({ kind: 'Other', metadata: { name: 'y' }, spec: {} })
    s.delete('Widget', 'default/a')
  }, 20)
  const seen = []
  for await (const ev of w) seen.push([ev.type, ev.object.kind, ev.object.metadata.name])
  assert.deepEqual(seen, [
    ['ADDED', 'Widget', 'a'],
    ['MODIFIED', 'Widget', 'a'],
    ['DELETED', 'Widget', 'a'],
  ])
  assert.deepEqual(await w.next(), { value: null, done: true })
  s.close()
})

test('watch: fromVersion skips the replay; all kinds without kind; tryNext; position', async () => {
  const s = Store.memory()
  const a = s.create(obj('a'))
  const w = s.watch({ fromVersion: a.metadata.resourceVersion })
  assert.equal(w.startVersion, Number(a.metadata.resourceVersion))
  assert.equal(s.watch({ kind: 'Widget' }).startVersion, s.resourceVersion())
  assert.equal(w.tryNext(), null)
  assert.equal(typeof w.position, 'number')
  const b = s.create({ kind: 'Other', metadata: { name: 'b' }, spec: {} })
  const ev = w.tryNext()
  assert.equal(ev.type, 'ADDED')
  assert.deepEqual(ev.object, b)
  s.create(obj('c'))
  const r = await w.next()
  assert.equal(r.done, false)
  assert.equal(r.value.object.metadata.name, 'c')
  w.close()
  assert.equal(w.tryNext(), null)
  assert.deepEqual(await w.next(), { value: null, done: true })
  s.close()
})

test('watch: break closes it; close() and store.close() end a pending next()', async () => {
  const s = Store.memory()
  s.create(obj('a'))
  s.create(obj('b'))
  const w = s.watch({ kind: 'Widget' })
  for await (const ev of w) {
    assert.equal(ev.object.metadata.name, 'a')
    break
  }
  assert.deepEqual(await w.next(), { value: null, done: true }, 'break called return()')

  const w2 = s.watch({ kind: 'Widget', fromVersion: s.resourceVersion() })
  const pending = w2.next()
  setTimeout(() => w2.close(), 20)
  assert.deepEqual(await pending, { value: null, done: true })

  const w3 = s.watch({ fromVersion: s.resourceVersion() })
  const pending3 = w3.next()
  setTimeout(() => s.close(), 20)
  assert.deepEqual(await pending3, { value: null, done: true })
})

test('watch: concurrent next() calls each get one event', async () => {
  const s = Store.memory()
  const w = s.watch({ kind: 'Widget', fromVersion: s.resourceVersion(), timeout: 5 })
  const ps = [w.next(), w.next(), w.next()]
  for (const n of ['a', 'b', 'c']) s.create(obj(n))
  const names = (await Promise.all(ps)).map((r) => r.value.object.metadata.name).sort()
  assert.deepEqual(names, ['a', 'b', 'c'])
  w.close()
  s.close()
})

test('watch from a compacted version is Expired', async () => {
  const s = Store.memory({ segmentSize: 4096 })
  for (let i = 0; i < 200; i++) s.create(obj(`w${i}`, { spec: { pad: 'x'.repeat(100) } }))
  const snap = await s.snapshot()
  assert.ok(snap.compactedSegments > 0, 'the snapshot compacted segments')
  throwsCode(() => s.watch({ fromVersion: 1 }), 'Expired')
  s.close()
})

test('file store: persists across reopen, snapshot path, async writes', async () => {
  const dir = tmpdir()
  const s = Store.open(dir)
  assert.equal(s.path, dir)
  const a = s.create(obj('a'))
  const b = await s.createAsync(obj('b'))
  const b2 = await s.updateAsync({ ...b, spec: { size: 7 } })
  assert.equal(b2.metadata.generation, 2)
  const b3 = await s.updateStatusAsync({ ...b2, status: { ok: 1 } })
  assert.deepEqual(b3.status, { ok: 1 })
  const snap = await s.snapshot()
  assert.ok(snap.path.startsWith(dir))
  assert.ok(snap.bytes > 0)
  await s.deleteAsync('Widget', 'default/a', a.metadata.resourceVersion)
  await rejectsCode(s.createAsync(obj('b')), 'AlreadyExists')
  await rejectsCode(s.updateAsync({ ...b, spec: { size: 1 } }), 'Conflict')
  await rejectsCode(s.deleteAsync('Widget', 'default/zzz'), 'NotFound')
  await rejectsCode(() => s.createAsync({ kind: 'Widget', metadata: { name: 'Bad_Name' } }), 'Invalid', 'metadata.name')
  s.close()
  const r = Store.open(dir)
  assert.equal(r.get('Widget', 'default/a'), null)
  assert.deepEqual(r.get('Widget', 'default/b'), b3)
  r.close()
})

test('always mode: sync writes are refused (they would block on fsync), async writes work', async () => {
  const dir = tmpdir()
  const s = Store.open(dir, { durability: 'always' })
  assert.equal(s.stats().durability, 'always')
  throwsCode(() => s.create(obj('a')), 'Invalid', 'durability')
  const a = await s.createAsync(obj('a'))
  throwsCode(() => s.update(a), 'Invalid', 'durability')
  throwsCode(() => s.updateStatus(a), 'Invalid', 'durability')
  throwsCode(() => s.delete('Widget', 'default/a'), 'Invalid', 'durability')
  const many = await Promise.all(Array.from({ length: 20 }, (_, i) => s.createAsync(obj(`c${i}`))))
  assert.equal(new Set(many.map((o) => o.metadata.resourceVersion)).size, 20)
  assert.equal(s.get('Widget', 'default/a').metadata.uid, a.metadata.uid)
  s.close()
  const n = Store.open(dir, { durability: 'none' })
  assert.equal(n.list('Widget').items.length, 21)
  n.close()
})

test('Io: the data directory cannot be created', () => {
  const dir = tmpdir()
  const file = path.join(dir, 'file')
  fs.writeFileSync(file, 'x')
  throwsCode(() => Store.open(path.join(file, 'sub')), 'Io')
})

test('Io: a data directory is open once at a time; close releases it', () => {
  const dir = tmpdir()
  const s = Store.open(dir)
  s.create(obj('a'))
  const err = throwsCode(() => Store.open(dir), 'Io')
  assert.ok(err.message.includes('in use by this process'), err.message)
  s.close() // releases the directory although `s` is still referenced
  const again = Store.open(dir)
  assert.notEqual(again.get('Widget', 'default/a'), null)
  throwsCode(() => s.create(obj('b')), 'ShutDown')
  again.close()
})

test('Corrupt: a compacted log without a snapshot covering it', async () => {
  const dir = tmpdir()
  const s = Store.open(dir, { segmentSize: 4096 })
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 60; i++) s.create(obj(`r${round}-${i}`, { spec: { pad: 'y'.repeat(100) } }))
    await s.snapshot()
  }
  assert.ok(s.stats().oldestVersion > 0, 'the log was compacted')
  s.close()
  for (const f of fs.readdirSync(path.join(dir, 'snapshots'))) fs.rmSync(path.join(dir, 'snapshots', f))
  throwsCode(() => Store.open(dir, { segmentSize: 4096 }), 'Corrupt')
})

test('several stores at once, each with concurrent async writes', async () => {
  const stores = [Store.memory(), Store.memory(), Store.open(tmpdir()), Store.open(tmpdir(), { durability: 'always' })]
  await Promise.all(stores.map((s, k) => Promise.all(Array.from({ length: 25 }, (_, i) => s.createAsync(obj(`s${k}-${i}`))))))
  for (const [k, s] of stores.entries()) {
    const l = s.list('Widget')
    assert.equal(l.items.length, 25)
    assert.ok(l.items.every((o) => o.metadata.name.startsWith(`s${k}-`)))
    s.close()
  }
})
