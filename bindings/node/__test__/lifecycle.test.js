'use strict'
// The process exits on its own (no --test-force-exit): pending promises settle on shutdown,
// close and garbage collection, and nothing floyd starts keeps the event loop alive after.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { floyd, childOk, tmpdir, obj } = require('./helpers')

test('a pending get() resolves null on shutDown and the process exits', () => {
  const r = childOk(`
    const q = new floyd.WorkQueue()
    q.get().then((v) => { assert.equal(v, null); console.log('resolved') })
    setTimeout(() => q.shutDown(), 20)
  `, { timeout: 20_000 })
  assert.match(r.stdout, /resolved/)
})

test('garbage collection of a queue releases its pending get()', () => {
  const r = childOk(`
    let p
    ;(() => { const q = new floyd.WorkQueue(); p = q.get() })()
    p.then((v) => { assert.equal(v, null); console.log('released') })
    const t = setInterval(() => globalThis.gc(), 10)
    p.finally(() => clearInterval(t))
  `, { args: ['--expose-gc'], timeout: 20_000 })
  assert.match(r.stdout, /released/)
})

test('a pending watch next() ends on store.close() and the process exits', () => {
  const r = childOk(`
    const s = floyd.Store.memory()
    const w = s.watch({ fromVersion: s.resourceVersion() })
    ;(async () => { for await (const ev of w) {} console.log('ended') })()
    setTimeout(() => s.close(), 20)
  `, { timeout: 20_000 })
  assert.match(r.stdout, /ended/)
})

test('an unclosed file store does not hold the process; its writes survive exit', () => {
  const dir = tmpdir()
  childOk(`
    const s = floyd.Store.open(${JSON.stringify(dir)})
    s.create({ kind: 'Widget', metadata: { name: 'kept' }, spec: {} })
    s.watch({ kind: 'Widget' }) // an idle watch nobody iterates holds nothing either
    new floyd.WorkQueue().add('x')
  `, { timeout: 20_000 })
  const s = floyd.Store.open(dir)
  assert.equal(s.get('Widget', 'default/kept').metadata.name, 'kept')
  s.close()
})

test('event loop stays responsive during always-mode writes and snapshots', async () => {
  const s = floyd.Store.open(tmpdir(), { durability: 'always' })
  let ticks = 0
  const t = setInterval(() => ticks++, 0)
  const writes = Array.from({ length: 30 }, (_, i) => s.createAsync(obj(`t${i}`)))
  await Promise.all(writes)
  await s.snapshot()
  clearInterval(t)
  assert.ok(ticks > 0)
  s.close()
})
