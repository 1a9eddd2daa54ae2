'use strict'
// Property fuzzing through the binding (reliability.md (f)): fast-check generates "almost
// valid" objects — the Kubernetes shape with, now and then, one field wrong in type, range,
// syntax or size, plus values JSON cannot hold (NaN, Infinity, undefined, functions,
// symbols, BigInt, Dates, cycles) — and arguments of every type. The property: a call
// returns a valid stored object or throws an Error whose `code` is a floyd error kind, and
// an `Invalid` names its `field`. Nothing else may escape and nothing may abort the process.
//
// FLOYD_PROPERTY_EXAMPLES sets the runs of the object property (default 10,000, as the plan
// asks per PR); the argument sweeps run a fifth of it.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fc = require('fast-check')
const { floyd } = require('./helpers')
const { Store, WorkQueue } = floyd

const RUNS = Number(process.env.FLOYD_PROPERTY_EXAMPLES || 10000)
const ARG_RUNS = Math.max(Math.floor(RUNS / 5), 1)
const KINDS = new Set([
  'NotFound', 'AlreadyExists', 'Conflict', 'Invalid', 'Expired', 'ShutDown', 'Io', 'Corrupt', 'Internal',
])

/** `valid` about six times in seven, else `nearMiss`. */
const mostly = (valid, nearMiss) => fc.oneof({ arbitrary: valid, weight: 6 }, { arbitrary: nearMiss, weight: 1 })

const validName = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/)
const badName = fc.constantFrom('', 'A', 'a_b', '-a', 'a-', '../x', 'x'.repeat(254), 'é', 'a\u0000b', '\ud800', 'a b', '🙂')
const validLabelKey = fc.oneof(
  fc.stringMatching(/^[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?$/),
  fc.stringMatching(/^[a-z]{1,8}\.[a-z]{2,4}\/[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?$/),
)
const badLabelKey = fc.constantFrom('', '/x', 'a/', 'x'.repeat(64), 'p'.repeat(254) + '/x', 'a b', '-x', 'a/b/c')
const validLabelValue = fc.stringMatching(/^([a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?)?$/)
const badLabelValue = fc.constantFrom('x'.repeat(64), '-a', 'a b', 'ü', 3)

function cyclic() {
  const o = { a: 1 }
  o.self = o
  return o
}

// Values JSON cannot hold (each must be refused, never silently turned into null).
const nonJson = fc.oneof(
  fc.constantFrom(NaN, Infinity, -Infinity, undefined),
  fc.constant(() => 1),
  fc.constant(Symbol('s')),
  fc.bigInt(),
  fc.date(),
  fc.constant(null).map(cyclic),
  fc.constant(new Map([[1, 2]])),
)
const jsonValue = fc.jsonValue({ maxDepth: 3 })
const nearJson = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    jsonValue,
    nonJson,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 3 }),
  ),
})).value
const anything = fc.oneof(jsonValue, nearJson)

const ownerRef = fc.record(
  {
    kind: mostly(fc.constantFrom('ReplicaSet', 'Deployment'), fc.constantFrom('lower', '', 5)),
    name: mostly(validName, badName),
    uid: mostly(fc.constantFrom('u-1', 'u-2'), fc.constantFrom('', 'a b', 'x'.repeat(129), null)),
    controller: mostly(fc.boolean(), fc.constantFrom('yes', 1)),
    blockOwnerDeletion: fc.boolean(),
    apiVersion: fc.constant('apps/v1'),
  },
  { requiredKeys: ['kind', 'name', 'uid'] },
)

const metadata = fc.record(
  {
    name: mostly(validName, badName),
    generateName: mostly(fc.constantFrom('web-', 'a'), fc.constantFrom('Web-', 'x'.repeat(250) + '-', 3)),
    namespace: mostly(validName, fc.oneof(badName, fc.constant(7))),
    labels: mostly(
      fc.dictionary(validLabelKey, validLabelValue, { maxKeys: 4 }),
      fc.oneof(
        fc.dictionary(fc.oneof(validLabelKey, badLabelKey), fc.oneof(validLabelValue, badLabelValue), { maxKeys: 3 }),
        fc.array(fc.string({ maxLength: 3 }), { maxLength: 2 }),
      ),
    ),
    annotations: mostly(
      fc.dictionary(validLabelKey, fc.string({ maxLength: 20 }), { maxKeys: 3 }),
      fc.dictionary(badLabelKey, fc.string({ maxLength: 3 }), { minKeys: 1, maxKeys: 2 }),
    ),
    generation: mostly(fc.nat(), fc.constantFrom(-1, 2 ** 64, 1.5, '1', NaN)),
    resourceVersion: mostly(fc.constant(''), fc.constantFrom('1', 'x', '-1', '99999999999999999999999')),
    ownerReferences: mostly(fc.array(ownerRef, { maxLength: 2 }), fc.constant({ kind: 'X' })),
    creationTimestamp: mostly(fc.constant('2026-01-02T03:04:05Z'), fc.constant('yesterday')),
  },
  { requiredKeys: ['name'] },
)

const almostValidObject = fc.record(
  {
    kind: mostly(fc.constantFrom('ConfigMap', 'Instance', 'Node', 'Custom'), fc.constantFrom('lower', '', 'X'.repeat(64), 5, null)),
    metadata: mostly(metadata, fc.constantFrom([], 'm')),
    apiVersion: fc.constant('v1'),
    spec: mostly(jsonValue, nearJson),
    status: mostly(jsonValue, nearJson),
  },
  { requiredKeys: ['kind', 'metadata'] },
)
const topLevel = mostly(almostValidObject, anything)

function assertFloydError(e) {
  assert.ok(e instanceof Error, `a non-Error escaped: ${String(e)}`)
  assert.ok(KINDS.has(e.code), `an Error without a floyd code escaped: ${e.code} ${e.message}`)
  if (e.code === 'Invalid') {
    assert.ok(typeof e.field === 'string' && e.field.length > 0, `Invalid without a field: ${e.message}`)
  }
}

function assertStored(o, sent) {
  assert.equal(typeof o, 'object')
  assert.ok(typeof o.metadata.name === 'string' && o.metadata.name.length > 0)
  assert.ok(Number(o.metadata.resourceVersion) > 0)
  assert.equal(o.kind, sent.kind)
}

function keyOf(o) {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name
}

test('create returns a stored object or a floyd error naming its field', () => {
  const s = Store.memory()
  let stored = 0
  let invalid = 0
  fc.assert(
    fc.property(topLevel, (obj) => {
      let got
      try {
        got = s.create(obj)
      } catch (e) {
        if (e && e.code === 'AlreadyExists') return // the shared store holds that name
        assertFloydError(e)
        if (e.code === 'Invalid') invalid++
        return
      }
      stored++
      assertStored(got, obj)
      assert.deepEqual(s.get(got.kind, keyOf(got)), got)
    }),
    { numRuns: RUNS },
  )
  // The property means something only if both outcomes happen.
  assert.ok(stored > 0 && invalid > 0, `stored ${stored}, invalid ${invalid}`)
  if (process.env.FLOYD_PROPERTY_VERBOSE) console.log({ stored, invalid })
  s.close()
})

test('store calls with arguments of every type return or throw a floyd error', () => {
  const s = Store.memory()
  fc.assert(
    fc.property(topLevel, mostly(fc.nat(), anything), (obj, n) => {
      for (const call of [
        () => s.update(obj),
        () => s.get(obj, n),
        () => s.list(obj, { namespace: n }),
        () => s.list('ConfigMap', obj),
        () => s.delete(obj, obj, n),
      ]) {
        try {
          call()
        } catch (e) {
          assertFloydError(e)
        }
      }
    }),
    { numRuns: ARG_RUNS },
  )
  s.close()
})

test('work queue calls with arguments of every type return or throw a floyd error', () => {
  const q = new WorkQueue()
  fc.assert(
    fc.property(anything, mostly(fc.double({ min: 0, max: 1e-4, noNaN: true }), anything), (item, seconds) => {
      for (const call of [
        () => q.add(item),
        () => q.addAfter(item, seconds),
        () => q.addRateLimited(item),
        () => q.forget(item),
        () => q.numRequeues(item),
        () => {
          const got = q.tryGet()
          if (got !== null) q.done(got)
        },
      ]) {
        try {
          call()
        } catch (e) {
          assertFloydError(e)
        }
      }
    }),
    { numRuns: ARG_RUNS },
  )
  q.shutDown()
})
