'use strict'
// The Node binding's benchmark (issue 7): run `node benches/node/bench_workqueue.js` after
// building bindings/node (`npm run build`, release, for meaningful figures). Prints
//   ratio <name> = <x> (target >= <y>); figure: ...; baseline: ...
// lines in the format scripts/bench collects.
//
// 1. WorkQueue add -> get -> done cycles per second from JS, against a pure-JS queue with the
//    same semantics (client-go's: a FIFO of dirty items, de-duplication of waiting items, an
//    item never handed out twice at once, re-queue on done if re-added while processing).
//    Both loops are synchronous and use `tryGet()`: `await q.get()` would measure the
//    promise machinery (a microtask per cycle) on both sides, not the queue; the async
//    figure is printed too, as information.
// 2. Store create + get round trips per second from JS, and the binding's cost per call over
//    the same loop in Rust alone (`_benchStoreRoundTrips`, on the same kind of objects).
const path = require('node:path')
const floyd = require(path.resolve(__dirname, '../../bindings/node'))

/** A pure-JS work queue with client-go's semantics (no rate limiting, no delays). */
class JsQueue {
  constructor() {
    this.queue = []
    this.head = 0
    this.dirty = new Set()
    this.processing = new Set()
    this.waiters = []
    this.shutting = false
  }
  add(item) {
    if (this.shutting || this.dirty.has(item)) return
    this.dirty.add(item)
    if (this.processing.has(item)) return
    const w = this.waiters.shift()
    if (w) {
      this.dirty.delete(item)
      this.processing.add(item)
      w(item)
      return
    }
    this.queue.push(item)
  }
  tryGet() {
    if (this.head >= this.queue.length) return null
    const item = this.queue[this.head++]
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.processing.add(item)
    this.dirty.delete(item)
    return item
  }
  get() {
    const item = this.tryGet()
    if (item !== null || this.shutting) return Promise.resolve(item)
    return new Promise((resolve) => this.waiters.push(resolve))
  }
  done(item) {
    this.processing.delete(item)
    if (this.dirty.has(item)) {
      this.dirty.delete(item)
      this.add(item)
    }
  }
}

function best(runs, fn) {
  let top = 0
  for (let r = 0; r < runs; r++) top = Math.max(top, fn())
  return top
}

function syncCycles(q, n, keys) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    q.add(keys[i & 1023])
    const k = q.tryGet()
    q.done(k)
  }
  return n / (Number(process.hrtime.bigint() - t0) / 1e9)
}

async function asyncCycles(q, n, keys) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    q.add(keys[i & 1023])
    const k = await q.get()
    q.done(k)
  }
  return n / (Number(process.hrtime.bigint() - t0) / 1e9)
}

function storeRoundTrips(n) {
  const s = floyd.Store.memory()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    const name = `w${i}`
    s.create({ kind: 'Widget', metadata: { name, labels: { app: 'web' } }, spec: { size: i } })
    s.get('Widget', `default/${name}`)
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  s.close()
  return secs
}

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2))

async function main() {
  const N = Number(process.env.BENCH_CYCLES || 200_000)
  const keys = Array.from({ length: 1024 }, (_, i) => `default/item-${i}`)
  const native = new floyd.WorkQueue()
  const js = new JsQueue()
  syncCycles(native, N / 10, keys) // warm-up (JIT, allocator)
  syncCycles(js, N / 10, keys)
  const nSync = best(3, () => syncCycles(native, N, keys))
  const jSync = best(3, () => syncCycles(js, N, keys))
  console.log(`ratio node_workqueue_cycles = ${fmt(nSync / jSync)} (target >= 3); figure: floyd WorkQueue ${fmt(nSync / 1e3)} k cycles/s (add, tryGet, done from JS); baseline: pure-JS queue ${fmt(jSync / 1e3)} k cycles/s`)
  const nAsync = await asyncCycles(native, N / 4, keys)
  const jAsync = await asyncCycles(js, N / 4, keys)
  console.log(`ratio node_workqueue_cycles_await = ${fmt(nAsync / jAsync)} (no target); figure: floyd WorkQueue ${fmt(nAsync / 1e3)} k cycles/s (add, await get, done); baseline: pure-JS queue ${fmt(jAsync / 1e3)} k cycles/s`)
  native.shutDown()

  const M = Number(process.env.BENCH_ROUND_TRIPS || 50_000)
  storeRoundTrips(M / 10)
  floyd._benchStoreRoundTrips(M / 10)
  const jsSecs = Math.min(storeRoundTrips(M), storeRoundTrips(M), storeRoundTrips(M))
  const rustSecs = Math.min(floyd._benchStoreRoundTrips(M), floyd._benchStoreRoundTrips(M), floyd._benchStoreRoundTrips(M))
  const perCallJs = (jsSecs / (2 * M)) * 1e6
  const perCallRust = (rustSecs / (2 * M)) * 1e6
  const overhead = perCallJs - perCallRust
  console.log(`ratio node_store_call_overhead_us = ${fmt(overhead)} (target <= 1); figure: ${fmt(M / jsSecs / 1e3)} k create+get round trips/s from JS, ${fmt(perCallJs)} µs per call; baseline: the same loop in Rust ${fmt(perCallRust)} µs per call (${fmt(M / rustSecs / 1e3)} k round trips/s)`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
