'use strict'
// Health probes through the Node binding: a driver's own `probe(instance, probe)` (sync or
// async) decides readiness and liveness; one that throws, rejects or resolves with a
// non-boolean is a probe error, never a crash; without `probe`, the built-in tcpSocket
// handler probes a real socket.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const { floyd, throwsCode } = require('./helpers')
const { ControlPlane, Store } = floyd

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` (errors count as false) until it holds; a liveness bound, not a timing test. */
async function eventually(cond, what, ms = 15_000) {
  const end = Date.now() + ms
  for (;;) {
    try {
      const v = cond()
      if (v) return v
    } catch {}
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

function replicaSet(replicas, probes) {
  return {
    kind: 'ReplicaSet',
    metadata: { name: 'web' },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'web' } },
      template: { metadata: { labels: { app: 'web' } }, spec: { version: '1', ...probes } },
    },
  }
}

const readyOf = (i) => (i.status?.conditions ?? []).find((c) => c.type === 'Ready') ?? {}
const readyCount = (s) => s.list('Instance').items.filter((i) => readyOf(i).status === 'True').length

function prober() {
  return {
    healthy: { readiness: false, liveness: true, startup: true },
    seen: [],
    starts: 0,
    stops: 0,
    start() { this.starts++; return { address: '127.0.0.1:1' } },
    stop() { this.stops++ },
    async probe(inst, p) {
      this.seen.push([inst.metadata.name, p])
      await sleep(1)
      return this.healthy[p.type]
    },
  }
}

const READINESS = { exec: { command: ['unused'] }, periodSeconds: 1 }

test('the driver\'s probe decides readiness', async () => {
  const s = Store.memory()
  const d = prober()
  const cp = new ControlPlane(s, d)
  cp.start()
  try {
    s.create({ kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' } } })
    s.create(replicaSet(2, { readinessProbe: READINESS }))
    await eventually(() => d.starts === 2 && d.seen.length >= 2, 'probes')
    assert.equal(readyCount(s), 0)
    await eventually(
      () => s.list('Instance').items.every((i) => readyOf(i).reason === 'ReadinessProbeFailed'),
      'failed readiness')
    assert.equal(readOnlyMessage(s), 'driver.probe resolved with false')
    assert.deepEqual(cp.endpoints('default/web'), [])
    const [, p] = d.seen[0]
    assert.equal(p.type, 'readiness')
    assert.deepEqual(p.exec, { command: ['unused'] })
    assert.deepEqual([p.periodSeconds, p.timeoutSeconds, p.successThreshold, p.failureThreshold],
      [1, 1, 1, 3])
    d.healthy.readiness = true
    await eventually(() => readyCount(s) === 2, 'ready')
    await eventually(() => cp.endpoints('default/web').length === 2, 'endpoints')
    const st = cp.stats()
    assert.ok(st.probes >= 4 && st.probeFailures >= 2, JSON.stringify(st))
    assert.equal(st.probeRestarts, 0)
  } finally {
    await cp.stop()
  }
})

function readOnlyMessage(s) {
  const msgs = new Set(s.list('Instance').items.map((i) => readyOf(i).message))
  assert.equal(msgs.size, 1)
  return [...msgs][0]
}

test('a failing liveness probe restarts through the driver', async () => {
  const s = Store.memory()
  const d = prober()
  d.healthy.liveness = false
  const cp = new ControlPlane(s, d, { restartBackoff: 0.05, restartBackoffMax: 0.1 })
  cp.start()
  try {
    s.create(replicaSet(1, { livenessProbe: { tcpSocket: { port: 1 }, periodSeconds: 1, failureThreshold: 1 } }))
    await eventually(() => d.stops >= 2 && d.starts >= 3, 'two restarts')
    assert.ok(cp.stats().probeRestarts >= 2)
    assert.ok(s.list('Instance').items[0].status.restartCount >= 2)
  } finally {
    await cp.stop()
  }
})

for (const [what, probe] of [
  ['throws', function () { this.seen.push(1); throw new Error('unreachable') }],
  ['rejects', async function () { this.seen.push(1); throw new Error('unreachable') }],
  ['resolves with a non-boolean', async function () { this.seen.push(1); return 'yes' }],
]) {
  test(`a probe that ${what} is an error, not a verdict`, async () => {
    const s = Store.memory()
    const d = { ...prober(), probe }
    const cp = new ControlPlane(s, d)
    cp.start()
    try {
      s.create(replicaSet(1, {
        livenessProbe: { exec: { command: ['x'] }, periodSeconds: 1, failureThreshold: 1 },
        readinessProbe: READINESS,
      }))
      // Tried three times per period, then discarded: no failure, no restart, not ready.
      await eventually(() => d.seen.length >= 9, 'probe attempts')
      const st = cp.stats()
      assert.equal(st.probeFailures, 0)
      assert.equal(st.probeRestarts, 0)
      assert.equal(d.stops, 0)
      assert.equal(readyCount(s), 0)
    } finally {
      await cp.stop()
    }
  })
}

test('without a probe method the built-in tcp probe runs', async () => {
  const server = net.createServer((c) => c.destroy())
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const port = server.address().port
  const s = Store.memory()
  const cp = new ControlPlane(s, {
    start() { return { address: `127.0.0.1:${port}` } },
    stop() {},
  })
  cp.start()
  try {
    s.create(replicaSet(2, { readinessProbe: { tcpSocket: { port }, periodSeconds: 1 } }))
    await eventually(() => readyCount(s) === 2, 'ready through the built-in probe')
  } finally {
    await cp.stop()
    server.close()
  }
})

test('a probe that is not a function is invalid', () => {
  const s = Store.memory()
  throwsCode(() => new ControlPlane(s, { start() {}, stop() {}, probe: 5 }), 'Invalid', 'driver.probe')
})
