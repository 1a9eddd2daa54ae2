'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { floyd, throwsCode, rejectsCode, childOk } = require('./helpers')
const { Store, Informer } = floyd

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits (on the event loop, so queued handler calls run) until `cond()` or fails. */
async function until(cond, what, ms = 5000) {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

function widget(name, { ns, labels, owner, node } = {}) {
  const metadata = { name, ...(ns ? { namespace: ns } : {}), ...(labels ? { labels } : {}) }
  if (owner) metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Set', name: 'set', uid: owner, controller: true }]
  return { kind: 'Widget', metadata, spec: { size: 1, ...(node ? { node } : {}) } }
}

test('sync, get/list/keys and every built-in index', async () => {
  const s = Store.memory()
  s.create(widget('a', { ns: 'n1', labels: { app: 'web' }, owner: 'u1', node: 'x' }))
  s.create(widget('b', { ns: 'n1', labels: { app: 'db' }, owner: 'u1', node: 'y' }))
  s.create(widget('c', { ns: 'n2', labels: { app: 'web' }, node: 'x' }))
  s.create({ kind: 'Other', metadata: { name: 'o' } })
  const inf = new Informer(s, 'Widget')
  inf.addIndex('ns', 'namespace')
  inf.addIndex('app', 'label:app')
  inf.addIndex('owner', 'owner')
  assert.equal(inf.hasSynced(), false)
  inf.start()
  inf.start() // idempotent
  assert.equal(await inf.waitForSync(10), true)
  assert.equal(inf.hasSynced(), true)
  inf.addIndex('node', 'field:spec.node') // after start: existing objects are indexed at once

  assert.equal(inf.get('n1/a').metadata.name, 'a')
  assert.equal(inf.get('n1/zzz'), null)
  assert.deepEqual(inf.keys(), ['n1/a', 'n1/b', 'n2/c'])
  assert.equal(inf.list().length, 3)
  assert.deepEqual(inf.list({ labelSelector: 'app=web' }).map((o) => o.metadata.name).sort(), ['a', 'c'])
  assert.deepEqual(inf.list({ labelSelector: { matchLabels: { app: 'db' } } }).map((o) => o.metadata.name), ['b'])

  const names = (objs) => objs.map((o) => o.metadata.name).sort()
  assert.deepEqual(names(inf.byIndex('ns', 'n1')), ['a', 'b'])
  assert.deepEqual(inf.indexKeys('ns', 'n2'), ['n2/c'])
  assert.deepEqual(inf.listIndexValues('ns').sort(), ['n1', 'n2'])
  assert.deepEqual(names(inf.byIndex('app', 'web')), ['a', 'c'])
  assert.deepEqual(inf.listIndexValues('app').sort(), ['db', 'web'])
  assert.deepEqual(names(inf.byIndex('owner', 'u1')), ['a', 'b'])
  assert.deepEqual(inf.byIndex('owner', 'nobody'), [])
  assert.deepEqual(names(inf.byIndex('node', 'x')), ['a', 'c'])
  assert.deepEqual(inf.indexKeys('node', 'y'), ['n1/b'])

  // read-your-own-writes: waitForVersion with the version a write returned
  const d = s.create(widget('d', { ns: 'n2', labels: { app: 'web' }, node: 'y' }))
  assert.equal(await inf.waitForVersion(d.metadata.resourceVersion, 10), true)
  assert.ok(inf.lastSyncedVersion() >= Number(d.metadata.resourceVersion))
  assert.deepEqual(inf.indexKeys('node', 'y').sort(), ['n1/b', 'n2/d'])
  assert.equal(await inf.waitForVersion(Number(d.metadata.resourceVersion)), true)
  assert.equal(await inf.waitForVersion(s.resourceVersion() + 1000, 0.05), false)
  const st = inf.stats()
  assert.equal(st.cached, 4)
  assert.equal(st.handlerErrors, 0)
  inf.stop()
  s.close()
})

test('namespace and label-selector scoped informer', async () => {
  const s = Store.memory()
  s.create(widget('a', { ns: 'n1', labels: { app: 'web' } }))
  s.create(widget('b', { ns: 'n1', labels: { app: 'db' } }))
  s.create(widget('c', { ns: 'n2', labels: { app: 'web' } }))
  const inf = new Informer(s, 'Widget', { namespace: 'n1', labelSelector: 'app=web', resync: 0 })
  inf.start()
  assert.equal(await inf.waitForSync(10), true)
  assert.deepEqual(inf.keys(), ['n1/a'])
  inf.stop()
})

test('a handler sees add, update, delete in order, with isInInitialList', async () => {
  const s = Store.memory()
  s.create(widget('pre'))
  const inf = new Informer(s, 'Widget')
  const seen = []
  const handler = {
    tag: 'h',
    onAdd(o, initial) { assert.equal(this.tag, 'h'); seen.push(['add', o.metadata.name, initial]) },
    onUpdate(old, o) { seen.push(['update', o.metadata.name, old.spec.size, o.spec.size]) },
    onDelete(o, unknown) { seen.push(['delete', o.metadata.name, unknown, o.finalStateUnknown]) },
  }
  inf.addEventHandler(handler)
  inf.start()
  await inf.waitForSync(10)
  const a = s.create(widget('a'))
  const a2 = s.update({ ...a, spec: { size: 2 } })
  s.update({ ...a2, spec: { size: 3 } })
  s.delete('Widget', 'default/a')
  s.create(widget('b'))
  await until(() => seen.length >= 6, 'six events')
  assert.deepEqual(seen, [
    ['add', 'pre', true],
    ['add', 'a', false],
    ['update', 'a', 1, 2],
    ['update', 'a', 2, 3],
    ['delete', 'a', false, undefined],
    ['add', 'b', false],
  ])
  inf.stop()
})

test('a handler added after start gets a synthetic add per cached object, then live events', async () => {
  const s = Store.memory()
  for (const n of ['x', 'y', 'z']) s.create(widget(n))
  const inf = new Informer(s, 'Widget')
  inf.start()
  await inf.waitForSync(10)
  const seen = []
  inf.addEventHandler({ onAdd: (o, initial) => seen.push([o.metadata.name, initial]) })
  s.create(widget('w'))
  await until(() => seen.length >= 4, 'four adds')
  assert.deepEqual(seen, [['x', true], ['y', true], ['z', true], ['w', false]])
  inf.stop()
})

test('a throwing (or rejecting) handler is counted and does not stop the others', async () => {
  const s = Store.memory()
  const inf = new Informer(s, 'Widget')
  const good = []
  inf.addEventHandler({ onAdd() { throw new Error('boom') } })
  inf.addEventHandler({ async onAdd() { throw new Error('async boom') } })
  inf.addEventHandler({ onAdd() { throw 'not an Error' } }) // eslint-disable-line no-throw-literal
  inf.addEventHandler({ onAdd: (o) => good.push(o.metadata.name) })
  inf.start()
  await inf.waitForSync(10)
  s.create(widget('a'))
  s.create(widget('b'))
  await until(() => good.length === 2 && inf.stats().handlerErrors === 6, 'two good adds and six errors')
  assert.deepEqual(good, ['a', 'b'])
  assert.match(inf.stats().lastHandlerError, /onAdd (threw|rejected)/)
  inf.stop()
})

test('after stop: no handler runs, every call but a few is ShutDown', async () => {
  const s = Store.memory()
  const inf = new Informer(s, 'Widget')
  const seen = []
  inf.addEventHandler({ onAdd: (o) => seen.push(o.metadata.name) })
  inf.addIndex('ns', 'namespace')
  inf.start()
  await inf.waitForSync(10)
  const pending = rejectsCode(inf.waitForVersion(s.resourceVersion() + 1_000_000), 'ShutDown')
  for (let i = 0; i < 50; i++) s.create(widget(`w${i}`))
  inf.stop() // events already queued for JS are dropped too
  inf.stop() // idempotent
  const n = seen.length
  s.create(widget('late'))
  await sleep(100)
  assert.equal(seen.length, n)
  assert.ok(!seen.includes('late'))
  await pending
  throwsCode(() => inf.get('default/w1'), 'ShutDown')
  throwsCode(() => inf.list(), 'ShutDown')
  throwsCode(() => inf.keys(), 'ShutDown')
  throwsCode(() => inf.byIndex('ns', 'default'), 'ShutDown')
  throwsCode(() => inf.indexKeys('ns', 'default'), 'ShutDown')
  throwsCode(() => inf.listIndexValues('ns'), 'ShutDown')
  throwsCode(() => inf.addIndex('x', 'owner'), 'ShutDown')
  throwsCode(() => inf.addEventHandler({}), 'ShutDown')
  throwsCode(() => inf.start(), 'ShutDown')
  await rejectsCode(inf.waitForSync(1), 'ShutDown')
  await rejectsCode(inf.waitForVersion(1, 1), 'ShutDown')
  assert.equal(inf.hasSynced(), true)
  assert.equal(typeof inf.lastSyncedVersion(), 'number')
  assert.equal(typeof inf.stats().cached, 'number')
})

test('waitForSync times out with false on an informer never started', async () => {
  const inf = new Informer(Store.memory(), 'Widget')
  assert.equal(await inf.waitForSync(0.05), false)
  inf.stop()
})

test('bad arguments are Invalid naming the argument', async () => {
  const s = Store.memory()
  throwsCode(() => new Informer({}, 'Widget'), 'Invalid', 'store')
  throwsCode(() => new Informer(), 'Invalid', 'store')
  throwsCode(() => new Informer(s, 5), 'Invalid', 'kind')
  throwsCode(() => new Informer(s, ''), 'Invalid', 'kind')
  throwsCode(() => new Informer(s, 'W', 'x'), 'Invalid', 'options')
  throwsCode(() => new Informer(s, 'W', { resync: NaN }), 'Invalid', 'resync')
  throwsCode(() => new Informer(s, 'W', { resync: -1 }), 'Invalid', 'resync')
  throwsCode(() => new Informer(s, 'W', { resync: '1' }), 'Invalid', 'resync')
  throwsCode(() => new Informer(s, 'W', { namespace: 1 }), 'Invalid', 'namespace')
  throwsCode(() => new Informer(s, 'W', { labelSelector: 'a in (' }), 'Invalid')
  const inf = new Informer(s, 'W')
  throwsCode(() => inf.addEventHandler(), 'Invalid', 'handler')
  throwsCode(() => inf.addEventHandler(() => {}), 'Invalid', 'handler')
  throwsCode(() => inf.addEventHandler([]), 'Invalid', 'handler')
  throwsCode(() => inf.addEventHandler({ onAdd: 1 }), 'Invalid', 'handler.onAdd')
  throwsCode(() => inf.addEventHandler({ onDelete: {} }), 'Invalid', 'handler.onDelete')
  throwsCode(() => inf.addEventHandler({ resync: Infinity }), 'Invalid', 'handler.resync')
  throwsCode(() => inf.addIndex(1, 'owner'), 'Invalid', 'name')
  throwsCode(() => inf.addIndex('i', (o) => [o.metadata.name]), 'Invalid', 'index')
  throwsCode(() => inf.addIndex('i', 'bogus'), 'Invalid', 'index')
  throwsCode(() => inf.addIndex('i', 'label:'), 'Invalid', 'index')
  throwsCode(() => inf.addIndex('i'), 'Invalid', 'index')
  inf.addIndex('i', 'owner')
  throwsCode(() => inf.addIndex('i', 'namespace'), 'Invalid')
  throwsCode(() => inf.get(1), 'Invalid', 'key')
  throwsCode(() => inf.list('app=web'), 'Invalid', 'options')
  throwsCode(() => inf.byIndex('i', 1), 'Invalid', 'value')
  throwsCode(() => inf.byIndex('missing', 'x'), 'Invalid')
  throwsCode(() => inf.listIndexValues(null), 'Invalid', 'name')
  await rejectsCode(inf.waitForSync('1'), 'Invalid', 'timeout')
  await rejectsCode(inf.waitForSync(-1), 'Invalid', 'timeout')
  await rejectsCode(inf.waitForVersion(), 'Invalid', 'resourceVersion')
  await rejectsCode(inf.waitForVersion(-1), 'Invalid', 'resourceVersion')
  await rejectsCode(inf.waitForVersion('abc'), 'Invalid', 'resourceVersion')
  await rejectsCode(inf.waitForVersion(1, NaN), 'Invalid', 'timeout')
  inf.stop()
})

test('the process exits by itself: a running informer with handlers, and a stopped one', () => {
  childOk(`
    const s = floyd.Store.memory()
    const inf = new floyd.Informer(s, 'W')
    let n = 0
    inf.addEventHandler({ onAdd: () => n++, onUpdate() {}, onDelete() {} })
    inf.start()
    inf.waitForSync(5).then((ok) => {
      assert.equal(ok, true)
      s.create({ kind: 'W', metadata: { name: 'a' } })
      setTimeout(() => { assert.equal(n, 1); console.log('done') }, 200)
    })
  `, { timeout: 20_000 })
  const r = childOk(`
    const s = floyd.Store.memory()
    const inf = new floyd.Informer(s, 'W')
    inf.addEventHandler({ onAdd() { inf.get('default/a') } }) // a handler that refers back
    inf.start()
    inf.waitForSync(5).then(() => { inf.stop(); console.log('stopped') })
  `, { timeout: 20_000 })
  assert.match(r.stdout, /stopped/)
})

test('terminating a worker stops its informers and control planes together, and the main thread goes on', () => {
  const r = childOk(`
    const fs = require('node:fs')
    const { Worker } = require('node:worker_threads')
    const coreThreads = () => fs.readdirSync('/proc/self/task')
      .map((t) => { try { return fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() } catch { return '' } })
      .filter((n) => /^floyd-(reflector|handler|rs|deploy|events|endpoints|agent|driver)/.test(n))
    const w = new Worker(\`
      const floyd = require(\${JSON.stringify(require.resolve(${JSON.stringify(require.resolve('..'))}))})
      const { parentPort } = require('node:worker_threads')
      const s = floyd.Store.memory()
      const a = new floyd.Informer(s, 'W')
      a.addEventHandler({ onAdd() {} })
      a.start()
      const cp = new floyd.ControlPlane(s, { start() { return new Promise(() => {}) }, stop() {} })
      cp.start()
      const b = new floyd.Informer(s, 'V')
      b.addEventHandler({ onAdd() {} })
      b.start()
      s.create({ kind: 'W', metadata: { name: 'a' } })
      s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
      Promise.all([a.waitForSync(5), b.waitForSync(5)]).then(() => parentPort.postMessage('up'))
      setInterval(() => {}, 1000)
    \`, { eval: true })
    w.on('message', async () => {
      if (process.platform === 'linux') {
        // A new thread takes its name when it first runs, so a loaded machine may show it
        // unnamed for a moment after start().
        const named = (ts) => ts.some((n) => n.startsWith('floyd-reflector')) && ts.some((n) => n.startsWith('floyd-handler'))
        let before = coreThreads()
        for (let i = 0; i < 500 && !named(before); i++) {
          await new Promise((r) => setTimeout(r, 10))
          before = coreThreads()
        }
        if (!named(before)) {
          throw new Error('expected informer threads while the worker runs, saw ' + before.join(','))
        }
      }
      await w.terminate()
      if (process.platform === 'linux') {
        for (let i = 0; i < 500 && coreThreads().length > 0; i++) await new Promise((r) => setTimeout(r, 10))
        if (coreThreads().length > 0) throw new Error('threads left after terminate: ' + coreThreads().join(','))
      }
      const s = floyd.Store.memory()
      const inf = new floyd.Informer(s, 'W')
      inf.start()
      s.create({ kind: 'W', metadata: { name: 'b' } })
      for (let i = 0; i < 500 && !inf.get('default/b'); i++) await new Promise((r) => setTimeout(r, 10))
      if (!inf.get('default/b')) throw new Error('the main thread informer never saw its object')
      inf.stop()
      console.log('main ok')
    })
  `, { timeout: 30_000 })
  assert.match(r.stdout, /main ok/)
})

test('K15: a delete found by a relist reaches onDelete once, as the last known object with finalStateUnknown', async () => {
  // The reflector is held at the object "gate" (a test hook: JS index functions cannot
  // block the reflector's thread), the log is compacted past it, and each object deleted
  // meanwhile must reach onDelete once, as the informer last knew it, with
  // finalStateUnknown: true (client-go's DeletedFinalStateUnknown) — and the relist must
  // deliver the gap's other changes, nothing twice.
  const kind = 'Widget'
  const s = Store.memory({ segmentSize: 4096 }) // small segments, so a snapshot compacts some
  const inf = new Informer(s, kind)
  const calls = [] // [what, key, object, unknown]
  const key = (o) => `${o.metadata.namespace}/${o.metadata.name}`
  const rv = (o) => Number(o.metadata.resourceVersion)
  const deletesOf = (k) => calls.filter(([w, kk]) => w === 'delete' && kk === k)
  const filler = (n) => {
    for (let i = 0; i < n; i++) {
      s.create({ kind: 'Filler', metadata: { name: `f${s.resourceVersion()}` }, spec: { pad: 'p'.repeat(200) } })
    }
  }
  for (let i = 0; i < 7; i++) s.create(widget(`o${i}`))
  const gate = inf._addGateIndexForTest('gate', 'gate')
  inf.addEventHandler({
    onAdd: (o) => calls.push(['add', key(o), o, false]),
    onUpdate: (old, o) => calls.push(['update', key(o), o, false]),
    onDelete: (o, unknown) => calls.push(['delete', key(o), o, unknown]),
  })
  inf.start()
  assert.equal(await inf.waitForSync(10), true)
  // A watched delete, and a watched update whose state is what the informer knows last.
  s.delete(kind, 'default/o5')
  s.update({ ...s.get(kind, 'default/o1'), spec: { size: 2 } })
  assert.equal(await inf.waitForVersion(s.resourceVersion(), 10), true)
  await until(() => deletesOf('default/o5').length === 1, 'the watched delete', 10000)
  const known = Object.fromEntries(['default/o0', 'default/o1', 'default/o3'].map((k) => [k, inf.get(k)]))
  assert.equal(known['default/o1'].spec.size, 2)

  let before
  try {
    s.create(widget('gate'))
    await until(() => gate.reached(), 'the reflector at the gate', 10000)
    before = inf.lastSyncedVersion()
    filler(40) // past the reflector's segment: these events are compacted away unseen
    s.update({ ...s.get(kind, 'default/o0'), spec: { size: 3 } }) // never seen by the informer
    s.delete(kind, 'default/o0')
    s.delete(kind, 'default/o1')
    s.update({ ...s.get(kind, 'default/o2'), spec: { size: 9 } })
    s.create(widget('new'))
    filler(80)
    s.delete(kind, 'default/o3')
    filler(80)
    const snap = await s.snapshot()
    assert.ok(snap.compactedSegments > 0, `the test needs a compaction: ${JSON.stringify(snap)}`)
    assert.ok(s.stats().oldestVersion > before + 1)
    assert.equal(inf.lastSyncedVersion(), before, 'the reflector was not held')
  } finally {
    gate.open()
  }
  await until(() => inf.stats().lists === 2 && inf.lastSyncedVersion() >= s.resourceVersion(), 'one relist', 10000)
  // A watched delete after the relist: the handler has seen everything before it.
  s.delete(kind, 'default/o4')
  await until(() => deletesOf('default/o4').length === 1, 'the delete after the relist', 10000)

  const st = inf.stats()
  assert.equal(st.expired, 1, JSON.stringify(st))
  assert.equal(st.lists, 2, `exactly one relist: ${JSON.stringify(st)}`)
  assert.match(st.lastError, /expired/i)
  assert.equal(st.handlerErrors, 0)
  for (const k of ['default/o0', 'default/o1', 'default/o3']) {
    const dels = deletesOf(k)
    assert.equal(dels.length, 1, k)
    const [, , tomb, unknown] = dels[0]
    assert.equal(unknown, true, k)
    assert.equal(tomb.finalStateUnknown, true, k)
    const { finalStateUnknown, ...rest } = tomb
    assert.deepEqual(rest, known[k], `${k}: the last state the informer knew`)
  }
  for (const k of ['default/o5', 'default/o4']) {
    const dels = deletesOf(k)
    assert.equal(dels.length, 1, k)
    assert.equal(dels[0][3], false, k)
    assert.equal(dels[0][2].finalStateUnknown, undefined, k)
  }
  // The relist delivered the gap's other changes, and nothing twice.
  const seen = calls.map(([w, k, o]) => `${w} ${k} ${rv(o)}`)
  assert.equal(new Set(seen).size, seen.length, seen.join('\n'))
  assert.ok(seen.includes(`add default/new ${rv(s.get(kind, 'default/new'))}`))
  assert.ok(seen.includes(`update default/o2 ${rv(s.get(kind, 'default/o2'))}`))
  // The handler's calls rebuild the store, and so does the cache.
  const state = new Map()
  for (const [w, k, o] of calls) {
    if (w === 'delete') state.delete(k)
    else state.set(k, rv(o))
  }
  const want = new Map(s.list(kind).items.map((o) => [key(o), rv(o)]))
  assert.deepEqual(state, want)
  assert.deepEqual(new Map(inf.list().map((o) => [key(o), rv(o)])), want)
  inf.stop()
  s.close()
})
