'use strict'
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { floyd, throwsCode } = require('./helpers')
const { WorkQueue, RateLimiter } = floyd

test('add, coalesce, get, done, len/length, tryGet; strings and numbers are different items', async () => {
  const q = new WorkQueue()
  q.add('a')
  q.add('a')
  q.add(1)
  q.add('1')
  assert.equal(q.len(), 3)
  assert.equal(q.length, 3)
  assert.equal(await q.get(), 'a')
  q.add('a') // re-added while processing: queued again after done
  assert.equal(q.len(), 2)
  assert.equal(q.tryGet(), 1)
  assert.equal(await q.get(), '1')
  assert.equal(q.tryGet(), null)
  q.done('a')
  assert.equal(q.len(), 1)
  assert.equal(await q.get(), 'a')
  q.done('a')
  q.done(1)
  q.done('1')
  q.done('never-got') // no-op
  assert.equal(q.len(), 0)
  q.shutDown()
})

test('get(timeout) resolves null on timeout; get(0) never waits', async () => {
  const q = new WorkQueue()
  assert.equal(await q.get(0.05), null)
  assert.equal(await q.get(0), null)
  q.add(3.5)
  assert.equal(await q.get(0), 3.5)
  q.shutDown()
})

test('addAfter delays an item; the earlier time wins', async () => {
  const q = new WorkQueue()
  q.addAfter('x', 3600)
  q.addAfter('x', 0.02)
  assert.equal(q.len(), 0)
  assert.equal(await q.get(5), 'x')
  q.done('x')
  q.addAfter('now', 0)
  assert.equal(q.tryGet(), 'now')
  q.shutDown()
})

test('shutDown: pending get() resolves null; queued items drain first; add is then ignored', async () => {
  const q = new WorkQueue()
  const pending = [q.get(), q.get()]
  setTimeout(() => q.shutDown(), 20)
  assert.deepEqual(await Promise.all(pending), [null, null])
  assert.equal(q.shuttingDown(), true)
  q.add('late') // ignored after shut-down, as client-go
  assert.equal(await q.get(), null)
  q.shutDown() // idempotent

  const q2 = new WorkQueue()
  q2.add('left')
  q2.shutDown()
  assert.equal(await q2.get(), 'left')
  assert.equal(await q2.get(), null)
})

test('shutDownWithDrain resolves once handed-out items are done', async () => {
  const q = new WorkQueue()
  q.add('a')
  const item = await q.get()
  let drained = false
  const p = q.shutDownWithDrain().then(() => {
    drained = true
  })
  await new Promise((r) => setTimeout(r, 30))
  assert.equal(drained, false)
  assert.equal(q.shuttingDown(), true)
  q.done(item)
  await p
  assert.equal(drained, true)
})

test('addRateLimited, numRequeues and forget use the queue limiter', async () => {
  const q = new WorkQueue({ rateLimiter: RateLimiter.exponential(0.001, 1), name: 'jobs' })
  assert.equal(q.name, 'jobs')
  q.addRateLimited('k')
  q.addRateLimited('k')
  assert.equal(q.numRequeues('k'), 2)
  assert.equal(await q.get(5), 'k')
  q.forget('k')
  assert.equal(q.numRequeues('k'), 0)
  q.done('k')
  assert.equal(new WorkQueue().name, null)
  q.shutDown()
})

test('metrics', async () => {
  const q = new WorkQueue({ name: 'm' })
  q.add('a')
  q.addAfter('b', 0)
  await q.get()
  const m = q.metrics()
  assert.equal(m.adds, 2)
  assert.equal(m.retries, 1)
  assert.equal(m.depth, 1)
  assert.equal(m.queueDuration.count, 1)
  assert.equal(m.queueDuration.buckets.length, 11)
  assert.equal(m.queueDuration.buckets[10][0], '+Inf')
  assert.equal(m.workDuration.count, 0)
  assert.equal(typeof m.unfinishedWorkSeconds, 'number')
  assert.equal(typeof m.longestRunningProcessorSeconds, 'number')
  q.shutDown()
})

test('RateLimiter.exponential doubles per failure up to max; forget resets', () => {
  const l = RateLimiter.exponential(0.005, 0.02)
  assert.deepEqual([l.when('a'), l.when('a'), l.when('a'), l.when('a')], [0.005, 0.01, 0.02, 0.02])
  assert.equal(l.numRequeues('a'), 4)
  assert.equal(l.when('b'), 0.005)
  l.forget('a')
  assert.equal(l.numRequeues('a'), 0)
  assert.equal(l.when('a'), 0.005)
  const d = RateLimiter.exponential()
  assert.equal(d.when(1), 0.005)
})

test('RateLimiter.fastSlow, bucket, maxOf, defaultController, withMaxWait', () => {
  const fs2 = RateLimiter.fastSlow(0.01, 2, 2)
  assert.deepEqual([fs2.when('x'), fs2.when('x'), fs2.when('x')], [0.01, 0.01, 2])
  const b = RateLimiter.bucket(1, 2)
  assert.equal(b.when('x'), 0)
  assert.equal(b.when('y'), 0)
  assert.ok(b.when('z') > 0.5, 'the bucket is empty after the burst')
  assert.equal(RateLimiter.bucket().when('x'), 0)
  assert.equal(RateLimiter.bucket(Infinity, 1).when('x'), 0)
  const m = RateLimiter.maxOf([RateLimiter.exponential(0.5, 10), RateLimiter.fastSlow(1, 5, 1)])
  assert.equal(m.when('x'), 1)
  assert.equal(m.when('x'), 5)
  assert.equal(m.numRequeues('x'), 2)
  const dc = RateLimiter.defaultController()
  assert.equal(dc.when('x'), 0.005)
  const capped = RateLimiter.exponential(1, 100).withMaxWait(1.5)
  assert.deepEqual([capped.when('x'), capped.when('x'), capped.when('x')], [1, 1.5, 1.5])
})

test('many concurrent get() promises each receive one distinct item, the rest null on shutDown', async () => {
  const q = new WorkQueue()
  const n = 64
  const gets = Array.from({ length: n + 8 }, () => q.get())
  for (let i = 0; i < n; i++) q.add(`item-${i}`)
  const got = []
  // The first n settle with items; shutting down then releases the other 8 with null.
  await new Promise((r) => setTimeout(r, 50))
  q.shutDown()
  for (const v of await Promise.all(gets)) if (v !== null) got.push(v)
  assert.equal(got.length, n)
  assert.equal(new Set(got).size, n)
})

test('waiting get() calls block neither the event loop nor the libuv pool', async () => {
  const q = new WorkQueue()
  const waiting = Array.from({ length: 8 }, () => q.get())
  let ticks = 0
  const t = setInterval(() => ticks++, 1)
  // fs.promises uses libuv's pool: 8 waiting gets must not starve it (it has 4 threads).
  const text = await fs.promises.readFile(__filename, 'utf8')
  assert.ok(text.includes('libuv pool'))
  await new Promise((r) => setTimeout(r, 30))
  clearInterval(t)
  assert.ok(ticks > 3, `timers ran while get() waited (${ticks})`)
  q.shutDown()
  assert.deepEqual(await Promise.all(waiting), Array(8).fill(null))
})

test('worker loop: add → get → done with several async workers', async () => {
  const q = new WorkQueue()
  const seen = []
  const worker = async () => {
    for (;;) {
      const k = await q.get()
      if (k === null) return
      seen.push(k)
      q.done(k)
    }
  }
  const workers = [worker(), worker(), worker(), worker()]
  for (let i = 0; i < 500; i++) q.add(i)
  const drain = q.shutDownWithDrain()
  await drain
  q.shutDown()
  await Promise.all(workers)
  assert.equal(seen.length, 500)
  assert.equal(new Set(seen).size, 500)
})

test('calls after shutDown stay safe', async () => {
  const q = new WorkQueue()
  q.shutDown()
  q.add('x')
  q.addAfter('x', 1)
  q.addRateLimited('x')
  q.done('x')
  q.forget('x')
  assert.equal(q.len(), 0)
  assert.equal(q.tryGet(), null)
  assert.equal(await q.get(), null)
  assert.equal(await q.get(10), null)
  await q.shutDownWithDrain()
  throwsCode(() => q.add({}), 'Invalid', 'item')
})
