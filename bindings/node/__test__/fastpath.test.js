'use strict'
// The fast path of floyd.js: `create`, `update`, `updateStatus` and `get` pass objects as
// JSON text, encoded in JS, instead of walking them property by property through napi. The
// encoder may only accept a value whose text the native side reads as exactly the value the
// walk would build; everything else must go to the walk (which accepts or refuses it with
// its own error). These tests hold the encoder to that, value by value, through the two
// test hooks `_jsonViaWalk` and `_jsonViaText`.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fc = require('fast-check')
const { floyd } = require('./helpers')
const { Store } = floyd

const RUNS = Number(process.env.FLOYD_PROPERTY_EXAMPLES || 10000)

/** The encoder's text for `v` read natively, or undefined where the encoder declines. */
function viaText(v) {
  const text = floyd._objectText(v)
  return text === undefined ? undefined : floyd._jsonViaText(text)
}

/** Asserts the encoder accepts `v` and agrees with the walk. */
function agrees(v, what) {
  const got = viaText(v)
  assert.notEqual(got, undefined, `${what}: the encoder declined`)
  assert.equal(got, floyd._jsonViaWalk(v), what)
}

/** Asserts the encoder leaves `v` to the walk. */
function declines(v, what) {
  assert.equal(floyd._objectText(v), undefined, what)
}

test('plain JSON values encode to what the walk reads', () => {
  // Strings of any Unicode, keys included; numbers the encoder takes (safe integers) and
  // those it leaves to the walk (floats, which must then be declined, not mangled).
  const key = fc.string({ unit: 'grapheme', maxLength: 6 })
  const leaf = fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 12 }),
    fc.maxSafeInteger(),
    fc.integer({ min: -1000, max: 1000 }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
  )
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('arr'), tie('obj')),
    arr: fc.array(tie('v'), { maxLength: 5 }),
    obj: fc.dictionary(key, tie('v'), { maxKeys: 5 }),
  })).obj
  let accepted = 0
  fc.assert(
    fc.property(value, (v) => {
      const got = viaText(v)
      if (got !== undefined) {
        accepted++
        assert.equal(got, floyd._jsonViaWalk(v))
      }
    }),
    { numRuns: RUNS },
  )
  // These values hold nothing the encoder declines, so it must take every one of them.
  assert.equal(accepted, RUNS)
})

test('values the encoder takes: edges of each JSON type', () => {
  agrees({ a: -0, b: 2 ** 53 - 1, c: -(2 ** 53 - 1), d: 0 }, 'integers')
  agrees({ s: 'quote " backslash \\ newline \n tab \t nul \u0000 del \u007f' }, 'escapes')
  agrees({ s: '\u2028\u2029 é 🙂 \ud83d\ude42' }, 'non-ASCII')
  agrees({ 'k"ey': 1, 'b\\': 2, '\n': 3 }, 'keys that need escapes')
  agrees({ b: 1, 10: 2, a: 3, 2: 4 }, 'integer-like keys (for-in order)')
  agrees({ a: undefined, b: [undefined, null, 1] }, 'undefined properties and items')
  agrees({ holes: [1, , 3] }, 'array holes') // eslint-disable-line no-sparse-arrays
  const bare = Object.create(null)
  bare.x = { y: [] }
  agrees(bare, 'an object without a prototype')
  agrees(JSON.parse('{"__proto__": {"x": 1}}'), 'an own "__proto__" key')
  let deep = {}
  const root = deep
  for (let i = 0; i < 99; i++) deep = deep.n = {}
  agrees(root, 'nesting at the bound')
})

test('lone surrogates: the fast path reads them as the walk does, or declines', () => {
  for (const s of ['\ud800', 'a\udc00b', '\ud800"', 'x\\\udfff']) {
    const v = { s }
    const got = viaText(v)
    // A string that needs escaping goes through JSON.stringify, whose \u escape of a lone
    // surrogate serde_json refuses: `_writeJson` then returns null and the walk runs.
    if (got !== null) assert.equal(got, floyd._jsonViaWalk(v), JSON.stringify(s))
  }
})

test('values the encoder leaves to the walk', () => {
  declines({ x: 0.5 }, 'a float')
  declines({ x: 2 ** 53 }, 'an integer beyond 2^53')
  declines({ x: NaN }, 'NaN')
  declines({ x: Infinity }, 'Infinity')
  declines({ x: 1n }, 'a BigInt')
  declines({ x: Symbol('s') }, 'a Symbol')
  declines({ x() {} }, 'a function')
  declines({ toJSON() { return {} } }, 'a toJSON method')
  declines({ x: new Date(0) }, 'a Date')
  declines({ x: new Map([[1, 2]]) }, 'a Map')
  declines({ x: new Uint8Array(2) }, 'binary data')
  declines({ x: Promise.resolve() }, 'a Promise')
  declines({ x: new String('s') }, 'a boxed string')
  declines({ x: new (class Widget {})() }, 'a class instance')
  declines({ x: new Proxy([1], {}) }, 'a Proxy of an array (the walk reads it as an object)')
  declines(Object.assign([], { length: 70000 }), 'an array at the top')
  declines({ x: Object.assign([], { length: 70000 }) }, 'a long array (the walk bounds it)')
  let deep = {}
  const root = deep
  for (let i = 0; i < 100; i++) deep = deep.n = {}
  declines(root, 'nesting past the bound')
  const cyc = { a: 1 }
  cyc.self = cyc
  declines(cyc, 'a cycle')
  declines(null, 'null')
  declines('text', 'a string')
})

test('inherited enumerable properties are read as the walk reads them', () => {
  const proto = Object.prototype
  Object.defineProperty(proto, 'polluted', { value: 'yes', enumerable: true, configurable: true })
  try {
    agrees({ a: 1 }, 'an enumerable property on Object.prototype')
  } finally {
    delete proto.polluted
  }
})

test('the fast path reads each property once, as the walk does', () => {
  const s = Store.memory()
  let reads = 0
  const obj = { kind: 'ConfigMap', metadata: { name: 'g' }, spec: {} }
  Object.defineProperty(obj.spec, 'n', {
    enumerable: true,
    get() {
      reads++
      return reads
    },
  })
  const stored = s.create(obj)
  assert.equal(reads, 1)
  assert.equal(stored.spec.n, 1)
  s.close()
})

test('writes through the fast path and through the walk store the same object', () => {
  const a = Store.memory({ seed: 7 })
  const b = Store.memory({ seed: 7 })
  const obj = {
    kind: 'ConfigMap',
    metadata: { name: 'x', labels: { app: 'web' }, annotations: { 'a/b': 'c"d' } },
    spec: { n: 3, list: [1, 'two', null, { deep: true }], text: 'é\n' },
  }
  const fast = a.create(obj)
  // A float sends the same object down the walk; the float itself is then removed again.
  const slow = b.create({ ...obj, spec: { ...obj.spec, f: 0.5 } })
  delete slow.spec.f
  assert.deepEqual(Object.keys(fast.spec).sort(), Object.keys(slow.spec).sort())
  for (const o of [fast, slow]) delete o.metadata.creationTimestamp
  assert.deepEqual(fast, slow)
  const up = a.update({ ...fast, spec: { n: 4 } })
  assert.equal(up.metadata.generation, 2)
  assert.deepEqual(a.get('ConfigMap', 'default/x'), up)
  const st = a.updateStatus({ ...up, status: { ready: 1 } })
  assert.deepEqual(st.status, { ready: 1 })
  assert.deepEqual(st.spec, { n: 4 })
  a.close()
  b.close()
})

test('errors on the fast path are the walk\'s and the core\'s, with their fields', () => {
  const s = Store.memory()
  const bad = (fn, code, field) => {
    assert.throws(fn, (e) => e.code === code && (field === undefined || e.field === field))
  }
  bad(() => s.create({ kind: 'ConfigMap', metadata: { name: 'Bad_Name' } }), 'Invalid', 'metadata.name')
  bad(() => s.create({ kind: 'ConfigMap', metadata: { name: 'n' }, spec: { x: NaN } }), 'Invalid', 'spec.x')
  s.create({ kind: 'ConfigMap', metadata: { name: 'n' } })
  bad(() => s.create({ kind: 'ConfigMap', metadata: { name: 'n' } }), 'AlreadyExists')
  bad(() => s.update({ kind: 'ConfigMap', metadata: { name: 'm' } }), 'NotFound')
  bad(() => s.update({ kind: 'ConfigMap', metadata: { name: 'n', resourceVersion: '1' } }), 'Conflict')
  bad(() => s.get(1, 'x'), 'Invalid', 'kind')
  bad(() => s.get('ConfigMap'), 'Invalid', 'key')
  s.close()
  bad(() => s.create({ kind: 'ConfigMap', metadata: { name: 'z' } }), 'ShutDown')
  bad(() => s.get('ConfigMap', 'default/n'), 'ShutDown')
})

test('Informer.get through the fast path returns what the store holds', async () => {
  const { Informer } = floyd
  const s = Store.memory()
  const made = s.create({ kind: 'Widget', metadata: { name: 'w', labels: { app: 'web' } }, spec: { n: [1, 'x'] } })
  const inf = new Informer(s, 'Widget')
  inf.start()
  assert.equal(await inf.waitForSync(10), true)
  assert.deepEqual(inf.get('default/w'), made)
  assert.equal(inf.get('default/none'), null)
  assert.throws(() => inf.get(7), (e) => e.code === 'Invalid' && e.field === 'key')
  inf.stop()
  assert.throws(() => inf.get('default/w'), (e) => e.code === 'ShutDown')
  s.close()
})

test('list, Informer.list and byIndex through the fast path return the objects get returns', async () => {
  const { Informer } = floyd
  const s = Store.memory()
  for (const [name, app] of [['b', 'web'], ['a', 'db'], ['c', 'web']]) {
    s.create({ kind: 'Widget', metadata: { name, labels: { app } }, spec: { name, list: [1, { x: 'é"' }] } })
  }
  s.create({ kind: 'Other', metadata: { name: 'o' } })
  const all = ['a', 'b', 'c'].map((n) => s.get('Widget', `default/${n}`))
  const l = s.list('Widget')
  assert.deepEqual(l.items, all)
  assert.equal(typeof l.resourceVersion, 'number')
  assert.equal(l.resourceVersion, s.resourceVersion())
  assert.deepEqual(s.list('Widget', { labelSelector: 'app=web' }).items, [all[1], all[2]])
  assert.deepEqual(s.list('Nothing').items, [])
  assert.throws(() => s.list('Widget', { labelSelector: '=' }), (e) => e.code === 'Invalid' && e.field === 'labelSelector')
  const inf = new Informer(s, 'Widget')
  inf.addIndex('app', 'label:app')
  inf.start()
  assert.equal(await inf.waitForSync(10), true)
  const byName = (xs) => [...xs].sort((p, q) => p.metadata.name.localeCompare(q.metadata.name))
  assert.deepEqual(byName(inf.list()), all)
  assert.deepEqual(byName(inf.list({ labelSelector: 'app=web' })), [all[1], all[2]])
  assert.deepEqual(byName(inf.byIndex('app', 'web')), [all[1], all[2]])
  assert.deepEqual(inf.byIndex('app', 'none'), [])
  assert.throws(() => inf.byIndex('nope', 'web'), (e) => typeof e.code === 'string')
  inf.stop()
  assert.throws(() => inf.list(), (e) => e.code === 'ShutDown')
  s.close()
})
