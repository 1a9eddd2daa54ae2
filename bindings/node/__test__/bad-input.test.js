'use strict'
// Bad input of every argument type (reliability.md §3(f)): each case is an Error with a
// `code` ('Invalid' naming the field), never a crash, a hang or a RangeError. The cases that
// could crash the process (deep, cyclic, huge values, panics) run in a child process with
// --unhandled-rejections=strict, so a crash fails the test instead of killing the runner.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { floyd, throwsCode, rejectsCode, tmpdir, childOk, obj } = require('./helpers')
const { Store, WorkQueue, RateLimiter } = floyd

const WRONG = { number: 42, string: 's', null: null, undefined, symbol: Symbol('s'), bigint: 10n, function: () => 1, array: [], bool: true }
const DURATIONS = [NaN, -1, Infinity, -Infinity, 1e300]

test('wrong argument types for object arguments are Invalid naming the argument', async () => {
  const s = Store.memory()
  for (const [name, v] of Object.entries(WRONG)) {
    throwsCode(() => s.create(v), 'Invalid', 'object')
    throwsCode(() => s.update(v), 'Invalid', 'object')
    throwsCode(() => s.updateStatus(v), 'Invalid', 'object')
    // Promise-returning methods reject (never throw) on bad arguments.
    await rejectsCode(s.createAsync(v), 'Invalid', 'object')
    await rejectsCode(s.updateAsync(v), 'Invalid', 'object')
    await rejectsCode(s.updateStatusAsync(v), 'Invalid', 'object')
    if (name !== 'null' && name !== 'undefined') {
      throwsCode(() => s.list('Widget', v), 'Invalid', 'options')
      throwsCode(() => s.watch(v), 'Invalid', 'options')
      throwsCode(() => Store.memory(v), 'Invalid', 'options')
      throwsCode(() => Store.open(tmpdir(), v), 'Invalid', 'options')
      throwsCode(() => new WorkQueue(v), 'Invalid', 'options')
    }
  }
  throwsCode(() => s.create(), 'Invalid', 'object')
})

test('wrong types for string, number and item arguments', async () => {
  const s = Store.memory()
  const q = new WorkQueue()
  const l = RateLimiter.exponential()
  for (const [name, v] of Object.entries(WRONG)) {
    if (name !== 'string') {
      throwsCode(() => s.get(v, 'default/a'), 'Invalid', 'kind')
      throwsCode(() => s.get('Widget', v), 'Invalid', 'key')
      throwsCode(() => s.list(v), 'Invalid', 'kind')
      throwsCode(() => s.delete(v, 'k'), 'Invalid', 'kind')
      await rejectsCode(s.deleteAsync('Widget', v), 'Invalid', 'key')
      if (name !== 'null' && name !== 'undefined') {
        throwsCode(() => Store.open(v), 'Invalid', 'path')
        throwsCode(() => s.watch({ kind: v }), 'Invalid', 'kind')
        throwsCode(() => s.list('Widget', { namespace: v }), 'Invalid', 'namespace')
        throwsCode(() => new WorkQueue({ name: v }), 'Invalid', 'name')
        throwsCode(() => Store.memory({ durability: v }), 'Invalid', 'durability')
      }
    }
    if (name !== 'string' && name !== 'number') {
      for (const call of [(x) => q.add(x), (x) => q.addAfter(x, 1), (x) => q.addRateLimited(x), (x) => q.done(x), (x) => q.forget(x), (x) => q.numRequeues(x), (x) => l.when(x), (x) => l.forget(x), (x) => l.numRequeues(x)]) {
        throwsCode(() => call(v), 'Invalid', 'item')
      }
    }
    if (name !== 'number' && name !== 'null' && name !== 'undefined') {
      await rejectsCode(q.get(v), 'Invalid', 'timeout')
      throwsCode(() => s.watch({ timeout: v }), 'Invalid', 'timeout')
      throwsCode(() => RateLimiter.exponential(v), 'Invalid', 'base')
      throwsCode(() => RateLimiter.bucket(v), 'Invalid', 'qps')
      throwsCode(() => Store.memory({ segmentSize: v }), 'Invalid', 'segmentSize')
    }
    if (name !== 'number') {
      throwsCode(() => q.addAfter('x', v), 'Invalid', 'seconds')
      throwsCode(() => RateLimiter.fastSlow(v, 1, 1), 'Invalid', 'fast')
      throwsCode(() => RateLimiter.exponential().withMaxWait(v), 'Invalid', 'maxDelay')
    }
  }
  for (const v of [NaN, Infinity, -Infinity]) throwsCode(() => q.add(v), 'Invalid', 'item')
  q.shutDown()
})

test('durations: NaN, ±Infinity, negative and huge are Invalid everywhere', async () => {
  const s = Store.memory()
  const q = new WorkQueue()
  for (const d of DURATIONS) {
    await rejectsCode(q.get(d), 'Invalid', 'timeout')
    throwsCode(() => q.addAfter('x', d), 'Invalid', 'seconds')
    throwsCode(() => s.watch({ timeout: d }), 'Invalid', 'timeout')
    throwsCode(() => RateLimiter.exponential(d, 1), 'Invalid', 'base')
    throwsCode(() => RateLimiter.exponential(0.1, d), 'Invalid', 'max')
    throwsCode(() => RateLimiter.fastSlow(d, 1, 1), 'Invalid', 'fast')
    throwsCode(() => RateLimiter.fastSlow(1, d, 1), 'Invalid', 'slow')
    throwsCode(() => RateLimiter.exponential().withMaxWait(d), 'Invalid', 'max_delay')
  }
  throwsCode(() => RateLimiter.exponential(2, 1), 'Invalid', 'base')
  throwsCode(() => RateLimiter.bucket(NaN), 'Invalid', 'qps')
  throwsCode(() => RateLimiter.bucket(-1), 'Invalid', 'qps')
  for (const b of [-1, 1.5, NaN, 2 ** 32]) throwsCode(() => RateLimiter.bucket(1, b), 'Invalid', 'burst')
  for (const n of [-1, 1.5, NaN, Infinity]) throwsCode(() => RateLimiter.fastSlow(1, 2, n), 'Invalid', 'maxFastAttempts')
  q.shutDown()
})

test('limiter arguments: maxOf and rateLimiter accept only RateLimiter objects', () => {
  const s = Store.memory()
  throwsCode(() => RateLimiter.maxOf(5), 'Invalid', 'limiters')
  throwsCode(() => RateLimiter.maxOf(), 'Invalid', 'limiters')
  throwsCode(() => RateLimiter.maxOf([RateLimiter.bucket(), 5]), 'Invalid', 'limiters[1]')
  throwsCode(() => RateLimiter.maxOf([s]), 'Invalid', 'limiters[0]')
  throwsCode(() => RateLimiter.maxOf([{}]), 'Invalid', 'limiters[0]')
  throwsCode(() => new WorkQueue({ rateLimiter: 5 }), 'Invalid', 'rateLimiter')
  throwsCode(() => new WorkQueue({ rateLimiter: new WorkQueue() }), 'Invalid', 'rateLimiter')
  assert.equal(RateLimiter.maxOf([]).when('x'), 0)
})

test('versions: fromVersion and resourceVersion must be non-negative integers or decimal strings', () => {
  const s = Store.memory()
  s.create(obj('a'))
  for (const v of [-1, 1.5, NaN, Infinity, 2 ** 60, 'abc', '-1', '', true, {}, 10n]) {
    throwsCode(() => s.delete('Widget', 'default/a', v), 'Invalid', 'resourceVersion')
    throwsCode(() => s.watch({ fromVersion: v }), 'Invalid', 'fromVersion')
  }
  throwsCode(() => s.update({ ...s.get('Widget', 'default/a'), metadata: { name: 'a', resourceVersion: 'x' } }), 'Invalid', 'metadata.resourceVersion')
  throwsCode(() => Store.memory({ durability: 'sometimes' }), 'Invalid', 'durability')
  throwsCode(() => Store.memory({ segmentSize: 1 }), 'Invalid', 'segment_size')
  throwsCode(() => Store.memory({ seed: -1 }), 'Invalid', 'seed')
})

test('values inside objects: BigInt, Symbol, functions, Dates, NaN and Infinity are Invalid naming the path', () => {
  const s = Store.memory()
  const cases = [
    [{ n: 10n }, 'spec.n'],
    [{ n: Symbol('x') }, 'spec.n'],
    [{ n: () => 1 }, 'spec.n'],
    [{ when: new Date() }, 'spec.when'],
    [{ buf: Buffer.from('x') }, 'spec.buf'],
    [{ list: [1, NaN] }, 'spec.list[1]'],
    [{ deep: { x: Infinity } }, 'spec.deep.x'],
  ]
  for (const [spec, field] of cases) throwsCode(() => s.create(obj('a', { spec })), 'Invalid', field)
  // undefined properties are left out and holes become null, as JSON.stringify does.
  const o = s.create({ kind: 'Widget', metadata: { name: 'u', namespace: undefined }, spec: { a: undefined, b: [1, , 3] } })
  assert.deepEqual(o.spec, { b: [1, null, 3] })
  // Shape errors come from the core, naming the field.
  throwsCode(() => s.create({ kind: 5, metadata: { name: 'a' } }), 'Invalid', 'kind')
  throwsCode(() => s.create({ kind: 'Widget', metadata: { name: 'a', labels: 'x' } }), 'Invalid', 'metadata.labels')
  throwsCode(() => s.create({ kind: 'Widget', metadata: 'x' }), 'Invalid', 'metadata')
  throwsCode(() => s.create({ kind: 'Widget', metadata: { name: 'a', generation: 'x' } }), 'Invalid', 'metadata.generation')
})

test('names and namespaces: DNS-1123 rules', () => {
  const s = Store.memory()
  for (const name of ['', 'a'.repeat(254), 'Upper', 'a_b', '../x', 'a\x00b', 'a\ud800b', 'emoji-😀', '-a', 'a-']) {
    throwsCode(() => s.create(obj(name)), 'Invalid', 'metadata.name')
  }
  for (const ns of ['Upper', 'a.b', 'a'.repeat(64)]) throwsCode(() => s.create(obj('a', { metadata: { namespace: ns } })), 'Invalid', 'metadata.namespace')
  assert.ok(s.create(obj('a'.repeat(253))))
})

test('labels and selectors: Invalid naming the part', () => {
  const s = Store.memory()
  const bad = [
    { ['p'.repeat(254) + '/k']: 'v' },
    { ['k'.repeat(64)]: 'v' },
    { k: 'v'.repeat(64) },
    { 'bad key': 'v' },
    { k: 'bad value' },
    { '': 'v' },
  ]
  for (const labels of bad) {
    const e = throwsCode(() => s.create(obj('a', { metadata: { labels } })), 'Invalid')
    assert.match(e.field, /^metadata\.labels/)
  }
  throwsCode(() => s.create(obj('a', { metadata: { labels: { k: 5 } } })), 'Invalid')
  for (const sel of ['app in (', '!', 'a==b==c', 'k'.repeat(64) + '=v', 'a in (x', ',']) {
    throwsCode(() => s.list('Widget', { labelSelector: sel }), 'Invalid', 'labelSelector')
  }
  for (const sel of [5, true, []]) throwsCode(() => s.list('Widget', { labelSelector: sel }), 'Invalid', 'labelSelector')
  throwsCode(() => s.list('Widget', { labelSelector: { matchExpressions: [{ key: 'a', operator: 'Near' }] } }), 'Invalid')
})

test('getters that throw propagate the thrown error; Proxy objects convert', () => {
  const s = Store.memory()
  const boom = new Error('boom from a getter')
  const o = { kind: 'Widget', metadata: { name: 'g' }, get spec() { throw boom } }
  assert.throws(() => s.create(o), (e) => e === boom)
  const p = new Proxy({ kind: 'Widget', metadata: { name: 'p' }, spec: { x: 1 } }, {})
  assert.equal(s.create(p).spec.x, 1)
  const hostile = new Proxy({}, { ownKeys() { throw new Error('trap') } })
  assert.throws(() => s.create(hostile), /trap/)
  // The store still works afterwards.
  assert.ok(s.create(obj('after')))
})

test('methods called on the wrong receiver throw, not crash', () => {
  const s = Store.memory()
  assert.throws(() => Store.prototype.get.call({}, 'Widget', 'default/a'))
  assert.throws(() => WorkQueue.prototype.add.call(s, 'x'))
  assert.throws(() => RateLimiter.prototype.when.call(new WorkQueue(), 'x'))
})

test('use after close / shutdown in async paths', async () => {
  const s = Store.memory()
  s.close()
  await rejectsCode(s.snapshot(), 'ShutDown')
})

test('crash-prone inputs in a child process: deep, cyclic, huge, many labels', () => {
  const r = childOk(`
    const s = floyd.Store.memory()
    const code = (fn) => { try { fn(); return 'no error' } catch (e) { if (!(e instanceof Error)) throw e; return [e.code, e.field] } }
    // 10^5 levels deep: Invalid at the depth bound, no RangeError, no stack overflow.
    let deep = {}; let c = deep; for (let i = 0; i < 1e5; i++) { c.x = {}; c = c.x }
    let r = code(() => s.create({ kind: 'Widget', metadata: { name: 'd' }, spec: deep }))
    assert.equal(r[0], 'Invalid'); assert.match(r[1], /^spec\\.x\\.x/)
    let arr = []; let a = arr; for (let i = 0; i < 1e5; i++) { const n = []; a.push(n); a = n }
    assert.equal(code(() => s.create({ kind: 'Widget', metadata: { name: 'd' }, spec: { arr } }))[0], 'Invalid')
    // 65 levels below spec: within the binding's bound, so the core's own depth rule answers.
    let d65 = {}; c = d65; for (let i = 0; i < 70; i++) { c.x = {}; c = c.x }
    r = code(() => s.create({ kind: 'Widget', metadata: { name: 'd' }, spec: d65 }))
    assert.equal(r[0], 'Invalid')
    // Cycles.
    const cyc = { kind: 'Widget', metadata: { name: 'c' }, spec: {} }; cyc.spec.self = cyc
    assert.equal(code(() => s.create(cyc))[0], 'Invalid')
    const cycArr = []; cycArr.push(cycArr)
    assert.equal(code(() => s.create({ kind: 'Widget', metadata: { name: 'c' }, spec: { cycArr } }))[0], 'Invalid')
    const cycLabels = {}; cycLabels.me = cycLabels
    assert.equal(code(() => s.create({ kind: 'Widget', metadata: { name: 'c', labels: cycLabels } }))[0], 'Invalid')
    // 100 MB: refused once the walk passes the size bound.
    r = code(() => s.create({ kind: 'Widget', metadata: { name: 'big' }, spec: { blob: 'x'.repeat(100 * 1024 * 1024) } }))
    assert.deepEqual(r, ['Invalid', 'spec.blob'])
    // 2 MB in pieces, and 10^6 labels.
    r = code(() => s.create({ kind: 'Widget', metadata: { name: 'big' }, spec: { parts: Array.from({ length: 2048 }, () => 'y'.repeat(1024)) } }))
    assert.equal(r[0], 'Invalid')
    const labels = {}; for (let i = 0; i < 1e6; i++) labels['k' + i] = 'v'
    assert.equal(code(() => s.create({ kind: 'Widget', metadata: { name: 'many', labels } }))[0], 'Invalid')
    // Just under the core's 1 MiB limit is fine; just over is Invalid from the core.
    assert.ok(s.create({ kind: 'Widget', metadata: { name: 'ok' }, spec: { blob: 'z'.repeat(1000 * 1000) } }))
    assert.equal(code(() => s.create({ kind: 'Widget', metadata: { name: 'over' }, spec: { blob: 'z'.repeat(1100 * 1000) } }))[0], 'Invalid')
    // The same through the async path.
    s.createAsync(cyc).then(() => { throw new Error('no error') }, (e) => { assert.equal(e.code, 'Invalid'); console.log('done') })
  `)
  assert.match(r.stdout, /done/)
})

test('a Rust panic is an Error with code Internal, and the process survives (child process)', () => {
  const r = childOk(`
    let e1; try { floyd._panicForTest() } catch (e) { e1 = e }
    assert.ok(e1 instanceof Error); assert.equal(e1.code, 'Internal'); assert.match(e1.message, /panic/)
    floyd._panicForTestAsync().then(() => { throw new Error('resolved') }, (e) => {
      assert.ok(e instanceof Error); assert.equal(e.code, 'Internal')
      const s = floyd.Store.memory(); s.create({ kind: 'Widget', metadata: { name: 'alive' } })
      console.log('survived')
    })
  `)
  assert.match(r.stdout, /survived/)
})
