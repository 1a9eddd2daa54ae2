'use strict'
// ControlPlane with a JS driver: end to end through a ReplicaSet and a Service, driver
// failures of every shape, bad arguments, use after stop, and shutdown paths (stop while a
// driver promise is pending, process exit, worker termination, garbage collection). Every
// control plane here is stopped, and the process exits on its own.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { floyd, throwsCode, rejectsCode, childOk, tmpdir } = require('./helpers')
const { ControlPlane, Store } = floyd

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Names of this process's control-plane threads (Linux; [] elsewhere). */
const CP_THREADS = String.raw`
  function cpThreads() {
    const fs = require('node:fs')
    if (!fs.existsSync('/proc/self/task')) return []
    return fs.readdirSync('/proc/self/task')
      .map((t) => { try { return fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() } catch { return '' } })
      .filter((n) => /^floyd-(rs|deploy|events|endpoints|agent|driver)/.test(n))
  }
`
const cpThreads = new Function('require', CP_THREADS + 'return cpThreads')(require)

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

/** A driver that records what runs; `start` is asynchronous. */
function recordingDriver({ delay = 10 } = {}) {
  let port = 9000
  const d = {
    running: new Map(),
    started: [],
    stopped: [],
    async start(inst) {
      await sleep(delay)
      const address = `127.0.0.1:${++port}`
      this.running.set(inst.metadata.name, address)
      this.started.push(inst.metadata.name)
      return { address }
    },
    async stop(inst) {
      await sleep(1)
      this.running.delete(inst.metadata.name)
      this.stopped.push(inst.metadata.name)
    },
  }
  return d
}

function replicaSet(name, replicas, app = name) {
  return {
    kind: 'ReplicaSet',
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app } },
      template: { metadata: { labels: { app } }, spec: { version: '1' } },
    },
  }
}

function service(name, app = name) {
  return { kind: 'Service', metadata: { name }, spec: { selector: { app } } }
}

/** A control plane over a fresh memory store with one bare Instance; returns its status. */
async function statusAfterStart(driver, options) {
  const s = Store.memory()
  const cp = new ControlPlane(s, driver, options)
  cp.start()
  s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
  const status = await eventually(() => {
    const st = s.get('Instance', 'default/i').status
    return st && st.phase ? st : null
  }, 'the instance status')
  const stats = cp.stats()
  await cp.stop()
  return { status, stats }
}

test('end to end: a ReplicaSet and a Service through an async JS driver', async () => {
  const s = Store.memory()
  const d = recordingDriver()
  const cp = new ControlPlane(s, d, { workers: 2, burstReplicas: 10 })
  cp.start()
  cp.start() // idempotent
  s.create(service('web'))
  s.create(replicaSet('web', 3))

  const eps = await eventually(() => cp.endpoints('default/web').length === 3 && cp.endpoints('default/web'), '3 endpoints')
  assert.deepEqual([...eps].sort(), [...d.running.values()].sort(), 'endpoints are the addresses start() returned')
  for (const i of s.list('Instance').items) {
    assert.equal(i.status.phase, 'Running')
    assert.equal(i.status.conditions[0].status, 'True')
    assert.equal(i.status.address, d.running.get(i.metadata.name))
  }

  // Round robin visits every ready address, in a cycle.
  const picks = Array.from({ length: 6 }, () => cp.pick('default/web'))
  assert.equal(new Set(picks).size, 3)
  assert.deepEqual(picks.slice(3), picks.slice(0, 3))
  const sticky = cp.pick('default/web', 'client-7')
  for (let i = 0; i < 5; i++) assert.equal(cp.pick('default/web', 'client-7'), sticky)
  throwsCode(() => cp.pick('default/nope'), 'NotFound')
  throwsCode(() => cp.endpoints('default/nope'), 'NotFound')

  // Scale down: the victims are stopped through the driver, the rest keep running.
  const before = new Set(d.running.keys())
  const scaled = cp.scale('default/web', 1, { kind: 'ReplicaSet' })
  assert.equal(scaled.spec.replicas, 1)
  await eventually(() => d.running.size === 1 && s.list('Instance').items.length === 1, 'scale down to 1')
  assert.equal(d.stopped.length, 2)
  for (const v of d.stopped) assert.ok(before.has(v), `stopped ${v} was running`)
  await eventually(() => cp.endpoints('default/web').length === 1, '1 endpoint')
  assert.equal(cp.pick('default/web'), [...d.running.values()][0])

  // Scale to zero: nothing runs, no address is picked.
  await cp.scaleAsync('default/web', 0, { kind: 'ReplicaSet' })
  await eventually(() => d.running.size === 0 && cp.runningInstances().length === 0, 'scale to 0')
  await eventually(() => cp.pick('default/web') === null, 'no ready address')
  assert.deepEqual(cp.endpoints('default/web'), [])

  const st = cp.stats()
  assert.equal(st.driverStarts, 3)
  assert.equal(st.driverStartFailures, 0)
  assert.equal(st.driverStops, 3)
  assert.ok(st.syncs > 0 && st.storeWrites > 0)
  assert.equal(st.runningInstances, 0)
  assert.equal(typeof st.controllerQueue, 'number')
  assert.equal(typeof st.agentQueue, 'number')

  assert.ok(cpThreads().length > 0 || process.platform !== 'linux')
  await cp.stop()
  await cp.stop() // idempotent
  assert.equal(d.running.size, 0)
  assert.deepEqual(cp.runningInstances(), [])
  assert.deepEqual(cpThreads(), [], 'stop() joined every thread')
})

function deployment(name, replicas, version, extra = {}) {
  return {
    kind: 'Deployment',
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { version } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 1 } },
      ...extra,
    },
  }
}

/** A template change, re-read and retried on Conflict (the controller writes the status). */
function setVersion(s, key, version) {
  for (;;) {
    const d = s.get('Deployment', key)
    d.spec.template.spec.version = version
    try {
      return s.update(d)
    } catch (e) {
      if (e.code !== 'Conflict') throw e
    }
  }
}

/** Versions of the instances the driver runs, sorted. */
function versions(d) {
  return [...d.running.values()].map((a) => d.versions.get(a)).sort()
}

function versionDriver() {
  const d = recordingDriver({ delay: 5 })
  d.versions = new Map()
  const start = d.start
  d.start = async function (inst) {
    const r = await start.call(this, inst)
    this.versions.set(r.address, inst.spec.version)
    return r
  }
  return d
}

test('end to end: a Deployment of 5, a rolling update and a rollback', async () => {
  const s = Store.memory()
  const d = versionDriver()
  const cp = new ControlPlane(s, d)
  cp.start()
  s.create(service('api'))
  s.create(deployment('api', 5, '1'))
  const st1 = await cp.waitForRollout('default/api', 30)
  assert.equal(st1.replicas, 5)
  assert.equal(st1.updatedReplicas, 5)
  await eventually(() => d.running.size === 5, '5 running')
  assert.deepEqual(versions(d), ['1', '1', '1', '1', '1'])
  await eventually(() => cp.endpoints('default/api').length === 5, '5 endpoints')

  setVersion(s, 'default/api', '2')
  await cp.waitForRollout('default/api', 30)
  await eventually(() => d.running.size === 5 && versions(d).every((v) => v === '2'), 'version 2 everywhere')
  assert.ok(d.stopped.length >= 5, 'the old instances were stopped through the driver')

  const rev = cp.rollback('default/api')
  assert.equal(typeof rev, 'number')
  await cp.waitForRollout('default/api', 30)
  await eventually(() => d.running.size === 5 && versions(d).every((v) => v === '1'), 'back to version 1')
  assert.equal(s.get('Deployment', 'default/api').spec.template.spec.version, '1')

  // Scale a Deployment (the default kind).
  cp.scale('default/api', 2)
  await cp.waitForRollout('default/api', 30)
  await eventually(() => d.running.size === 2, '2 running')

  await cp.scaleAsync('default/api', 0)
  await eventually(() => d.running.size === 0 && cp.runningInstances().length === 0, 'nothing running')
  await cp.stop()
})

test('pause holds a rollout, resume lets it finish', async () => {
  const s = Store.memory()
  const d = versionDriver()
  const cp = new ControlPlane(s, d)
  cp.start()
  s.create(deployment('api', 2, '1'))
  await cp.waitForRollout('default/api', 30)
  assert.equal(cp.pause('default/api').spec.paused, true)
  setVersion(s, 'default/api', '2')
  await sleep(300)
  assert.deepEqual(versions(d), ['1', '1'], 'nothing rolls while paused')
  assert.equal((await cp.resumeAsync('default/api')).spec.paused, false)
  await cp.waitForRollout('default/api', 30)
  await eventually(() => d.running.size === 2 && versions(d).every((v) => v === '2'), 'version 2 after resume')
  await cp.pauseAsync('default/api')
  cp.resume('default/api')
  assert.equal(await cp.rollbackAsync('default/api', 0) > 0, true)
  await cp.waitForRollout('default/api', 30)
  await cp.stop()
})

test('waitForRollout: Expired on timeout and on the progress deadline, NotFound, ShutDown on stop', async () => {
  const s = Store.memory()
  const cp = new ControlPlane(s, { start: () => Promise.reject(new Error('broken version')), stop() {} })
  cp.start()
  await rejectsCode(cp.waitForRollout('default/none', 1), 'NotFound')
  s.create(deployment('bad', 1, '1', { progressDeadlineSeconds: 1 }))
  await rejectsCode(cp.waitForRollout('default/bad', 0.05), 'Expired')
  const e = await rejectsCode(cp.waitForRollout('default/bad', 30), 'Expired')
  assert.match(e.message, /ProgressDeadlineExceeded/)
  s.create(deployment('slow', 1, '1')) // never available, deadline far away
  const pending = rejectsCode(cp.waitForRollout('default/slow'), 'ShutDown')
  await sleep(50)
  await cp.stop()
  await pending
  await rejectsCode(cp.waitForRollout('default/bad', 1), 'ShutDown')
  throwsCode(() => cp.pause('default/bad'), 'ShutDown')
  throwsCode(() => cp.rollback('default/bad'), 'ShutDown')
})

test('use after stop is ShutDown; stats still work', async () => {
  const s = Store.memory()
  const cp = new ControlPlane(s, recordingDriver())
  cp.start()
  s.create(replicaSet('web', 1))
  await cp.stop()
  throwsCode(() => cp.start(), 'ShutDown')
  throwsCode(() => cp.scale('default/web', 2, { kind: 'ReplicaSet' }), 'ShutDown')
  await rejectsCode(cp.scaleAsync('default/web', 2, { kind: 'ReplicaSet' }), 'ShutDown')
  throwsCode(() => cp.endpoints('default/web'), 'ShutDown')
  throwsCode(() => cp.pick('default/web'), 'ShutDown')
  assert.equal(typeof cp.stats().syncs, 'number')
  await cp.stop()
})

test('a never-started control plane stops; a closed store is refused', async () => {
  const s = Store.memory()
  const cp = new ControlPlane(s, recordingDriver())
  await cp.stop()
  throwsCode(() => cp.start(), 'ShutDown')
  s.close()
  throwsCode(() => new ControlPlane(s, recordingDriver()), 'ShutDown')
})

test('a rejected start is recorded in the instance status', async () => {
  const { status, stats } = await statusAfterStart({
    async start() {
      throw new Error('no capacity')
    },
    stop() {},
  })
  assert.equal(status.phase, 'Pending')
  assert.equal(status.restartCount, 1)
  assert.match(status.message, /no capacity/)
  assert.equal(status.conditions[0].status, 'False')
  assert.equal(status.conditions[0].reason, 'StartFailed')
  assert.equal(stats.driverStartFailures, 1)
})

test('a failed start is retried after restartBackoff and then runs', async () => {
  const s = Store.memory()
  let calls = 0
  const cp = new ControlPlane(s, {
    async start() {
      if (++calls === 1) throw new Error('first try fails')
      return { address: 'ok:1' }
    },
    stop() {},
  }, { restartBackoff: 0.05, restartBackoffMax: 0.1 })
  cp.start()
  s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
  const st = await eventually(() => {
    const st = s.get('Instance', 'default/i').status
    return st && st.phase === 'Running' ? st : null
  }, 'the retried start')
  assert.equal(st.restartCount, 1)
  assert.equal(st.address, 'ok:1')
  assert.equal(calls, 2)
  assert.equal(cp.stats().driverStartFailures, 1)
  await cp.stop()
})

test('a synchronous throw is a failed start', async () => {
  const { status } = await statusAfterStart({
    start() {
      throw new TypeError('boom')
    },
    stop() {},
  })
  assert.equal(status.restartCount, 1)
  assert.equal(status.message, 'start failed: boom')
})

test('rejections and throws of non-Error values are failures', async () => {
  for (const [start, re] of [
    [() => Promise.reject(), /driver\.start rejected with undefined/],
    [() => Promise.reject('plain string'), /plain string/],
    [() => Promise.reject(Symbol('s')), /driver\.start rejected with symbol/],
    [() => { throw 42 }, /driver\.start threw a value that is not an Error/],
    [() => { throw { message: 'not an Error' } }, /driver\.start threw a value that is not an Error/],
  ]) {
    const { status } = await statusAfterStart({ start, stop() {} })
    assert.equal(status.restartCount, 1)
    assert.match(status.message, re)
  }
})

test('a start result other than undefined or {address: string} is a failure', async () => {
  for (const [start, re] of [
    [() => 42, /got number/],
    [async () => 'host:80', /got string/],
    [() => [1], /got array/],
    [async () => ({ address: 5 }), /an address that is number/],
    [() => ({ get address() { throw new Error('getter blew up') } }), /getter blew up/],
    [() => ({ then: (ok) => ok(true) }), /got boolean/], // a thenable is awaited
  ]) {
    const { status } = await statusAfterStart({ start, stop() {} })
    assert.equal(status.phase, 'Pending', `for ${start}`)
    assert.match(status.message, re)
  }
  // These are fine: no address.
  for (const start of [() => undefined, async () => null, () => ({}), () => ({ address: null })]) {
    const { status } = await statusAfterStart({ start, stop() {} })
    assert.equal(status.phase, 'Running', `for ${start}`)
    assert.equal(status.address, null)
  }
})

test('driver methods run with this = the driver (classes work)', async () => {
  class Driver {
    constructor() {
      this.prefix = '10.0.0.'
      this.n = 0
    }
    async start() {
      return { address: `${this.prefix}${++this.n}:80` }
    }
    stop() {}
  }
  const { status } = await statusAfterStart(new Driver())
  assert.equal(status.address, '10.0.0.1:80')
})

test('a promise that never settles fails after driverTimeout', async () => {
  const pending = [] // reachable, so it could still settle
  const { status } = await statusAfterStart({ start: () => new Promise((r) => pending.push(r)), stop() {} }, { driverTimeout: 0.2 })
  // The core fails the call at the timeout (the binding's own wait, a moment later, only
  // frees the pool thread and would say "did not settle").
  assert.match(status.message, /driver start did not finish within 0\.2s|driver\.start did not settle within/)
})

const isReady = (i) => (i.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')

test('reportExit restarts the instance after the backoff; bad input is typed', async () => {
  const s = Store.memory()
  const d = recordingDriver({ delay: 1 })
  const cp = new ControlPlane(s, d, { restartBackoff: 0.05, restartBackoffMax: 0.1 })
  cp.start()
  s.create(replicaSet('web', 1))
  const inst = await eventually(() => {
    const [i] = s.list('Instance').items
    return i && isReady(i) ? i : null
  }, 'a ready instance')
  const key = `default/${inst.metadata.name}`
  assert.equal(inst.status.restartCount, 0)
  assert.equal(cp.reportExit(key, 'segfault'), undefined)
  // Restarted after the backoff: the same instance, started again, one restart more.
  await eventually(() => {
    const i = s.get('Instance', key)
    return i.status.restartCount === 1 && isReady(i)
  }, 'the restart')
  assert.deepEqual(d.started, [inst.metadata.name, inst.metadata.name])
  assert.equal(cp.stats().driverStarts, 2)
  await cp.reportExitAsync(key, 'again')
  await eventually(() => s.get('Instance', key).status.restartCount === 2 && isReady(s.get('Instance', key)), 'a second restart')

  throwsCode(() => cp.reportExit('default/nope', 'gone'), 'NotFound')
  await rejectsCode(() => cp.reportExitAsync('default/nope', 'gone'), 'NotFound')
  throwsCode(() => cp.reportExit(), 'Invalid', 'instanceKey')
  throwsCode(() => cp.reportExit(5, 'gone'), 'Invalid', 'instanceKey')
  throwsCode(() => cp.reportExit(key), 'Invalid', 'message')
  throwsCode(() => cp.reportExit(key, { why: 1 }), 'Invalid', 'message')
  await rejectsCode(() => cp.reportExitAsync(null, 'gone'), 'Invalid', 'instanceKey')
  await cp.stop()
  throwsCode(() => cp.reportExit(key, 'gone'), 'ShutDown')
})

test('a start past driverTimeout fails while the others run; its late answer is ignored', async () => {
  const s = Store.memory()
  let hung = null
  let release = null
  const d = {
    start(inst) {
      if (hung === null) {
        hung = inst.metadata.name
        return new Promise((r) => (release = r))
      }
      return { address: `${inst.metadata.name}:80` }
    },
    stop() {},
  }
  // A long backoff: the timed-out start is not retried during the test.
  const cp = new ControlPlane(s, d, { driverThreads: 2, driverTimeout: 0.3, restartBackoff: 300, restartBackoffMax: 300 })
  cp.start()
  s.create(replicaSet('web', 2))
  await eventually(() => release, 'the hung start')
  const key = `default/${hung}`
  const status = () => s.get('Instance', key).status ?? {}
  await eventually(() => status().conditions?.[0]?.reason === 'StartTimedOut', 'the timeout in status')
  assert.equal(status().restartCount, 1)
  assert.match(status().message, /did not finish within 0\.3s/)
  await eventually(() => s.list('Instance').items.filter(isReady).length === 1, 'the other instance')
  const stats = cp.stats()
  assert.equal(stats.driverTimeouts, 1)
  assert.equal(stats.driverThreadsReplaced, 1)
  release({ address: 'late:1' })
  await eventually(() => cp.stats().driverLateResults === 1, 'the late answer')
  assert.equal(status().conditions[0].reason, 'StartTimedOut')
  assert.equal(status().address, undefined)
  assert.ok(!cp.runningInstances().includes(key))
  await cp.stop()
})

test('a promise garbage-collected unsettled fails at once', () => {
  const r = childOk(`
    const s = floyd.Store.memory()
    const cp = new floyd.ControlPlane(s, { start: () => new Promise(() => {}), stop() {} })
    cp.start()
    s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
    ;(async () => {
      for (let i = 0; i < 1000; i++) {
        globalThis.gc()
        const st = s.get('Instance', 'default/i').status
        if (st && st.message) { console.log(st.message); await cp.stop(); return }
        await new Promise((r) => setTimeout(r, 10))
      }
      throw new Error('no failure recorded')
    })()
  `, { args: ['--expose-gc'], timeout: 30_000 })
  assert.match(r.stdout, /driver\.start's promise can never settle/)
})

test('stop() while a driver promise is pending does not deadlock', async () => {
  const s = Store.memory()
  let release
  let called = false
  const cp = new ControlPlane(s, {
    start() {
      called = true
      return new Promise((r) => (release = r))
    },
    stop() {},
  })
  cp.start()
  s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
  await eventually(() => called, 'start called')
  let stopped = false
  const p = cp.stop().then(() => (stopped = true))
  await sleep(100)
  assert.equal(stopped, false, 'stop waits for the driver call in flight')
  release({ address: 'x:1' })
  await p
  await eventually(() => s.get('Instance', 'default/i').status.phase === 'Running', 'the late start recorded')
})

test('stop() with a never-settling driver call resolves after driverTimeout', async () => {
  const s = Store.memory()
  let called = false
  const cp = new ControlPlane(s, { start: () => ((called = true), new Promise(() => {})), stop() {} }, { driverTimeout: 0.5 })
  cp.start()
  s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
  await eventually(() => called, 'start called')
  const t0 = Date.now()
  await cp.stop()
  assert.ok(Date.now() - t0 < 5000, `stop took ${Date.now() - t0} ms`)
})

test('a driver may call back into the store and the control plane', async () => {
  const s = Store.memory()
  s.create({ kind: 'Widget', metadata: { name: 'log' }, spec: { starts: 0 } })
  let cp
  const driver = {
    start(inst) {
      const w = s.get('Widget', 'default/log')
      w.spec.starts += 1
      s.update(w) // re-entrant store write from the driver
      cp.stats()
      return { address: `${inst.metadata.name}:80` }
    },
    stop() {},
  }
  cp = new ControlPlane(s, driver)
  cp.start()
  s.create(service('web'))
  s.create(replicaSet('web', 2))
  await eventually(() => cp.endpoints('default/web').length === 2, '2 endpoints')
  assert.equal(s.get('Widget', 'default/log').spec.starts, 2)
  await cp.stop()
})

test('scale: Deployment by default, NotFound for a missing object', async () => {
  const s = Store.memory()
  const cp = new ControlPlane(s, recordingDriver())
  s.create({ kind: 'Deployment', metadata: { name: 'api' }, spec: { replicas: 1, selector: { matchLabels: { app: 'api' } }, template: { metadata: { labels: { app: 'api' } }, spec: {} } } })
  assert.equal(cp.scale('default/api', 4).spec.replicas, 4)
  assert.equal(s.get('Deployment', 'default/api').spec.replicas, 4)
  assert.equal((await cp.scaleAsync('default/api', 2, { kind: 'Deployment' })).spec.replicas, 2)
  throwsCode(() => cp.scale('default/none', 1), 'NotFound')
  throwsCode(() => cp.scale('default/api', 1, { kind: 'ReplicaSet' }), 'NotFound')
  await cp.stop()
})

test('scale in an always-mode store must be scaleAsync', async () => {
  const s = Store.open(tmpdir(), { durability: 'always' })
  const cp = new ControlPlane(s, recordingDriver())
  await s.createAsync(replicaSet('web', 0))
  throwsCode(() => cp.scale('default/web', 1, { kind: 'ReplicaSet' }), 'Invalid', 'durability')
  throwsCode(() => cp.pause('default/web'), 'Invalid', 'durability')
  throwsCode(() => cp.rollback('default/web'), 'Invalid', 'durability')
  throwsCode(() => cp.reportExit('default/web-x', 'crashed'), 'Invalid', 'durability')
  await rejectsCode(() => cp.reportExitAsync('default/web-x', 'crashed'), 'NotFound')
  assert.equal((await cp.scaleAsync('default/web', 1, { kind: 'ReplicaSet' })).spec.replicas, 1)
  await cp.stop()
  s.close()
})

test('bad arguments are Invalid and name the argument', async () => {
  const s = Store.memory()
  const d = recordingDriver()
  throwsCode(() => new ControlPlane(), 'Invalid', 'store')
  throwsCode(() => new ControlPlane({}, d), 'Invalid', 'store')
  throwsCode(() => new ControlPlane(new floyd.WorkQueue(), d), 'Invalid', 'store')
  throwsCode(() => new ControlPlane(s), 'Invalid', 'driver')
  throwsCode(() => new ControlPlane(s, 'driver'), 'Invalid', 'driver')
  throwsCode(() => new ControlPlane(s, {}), 'Invalid', 'driver.start')
  throwsCode(() => new ControlPlane(s, { start() {} }), 'Invalid', 'driver.stop')
  throwsCode(() => new ControlPlane(s, { start: 1, stop() {} }), 'Invalid', 'driver.start')
  throwsCode(() => new ControlPlane(s, d, 5), 'Invalid', 'options')
  for (const [opts, field] of [
    [{ workers: 0 }, 'workers'],
    [{ workers: 257 }, 'workers'],
    [{ workers: 1.5 }, 'workers'],
    [{ workers: '2' }, 'workers'],
    [{ burstReplicas: 0 }, 'burst_replicas'],
    [{ burstReplicas: 501 }, 'burst_replicas'],
    [{ burstReplicas: -1 }, 'burstReplicas'],
    [{ driverThreads: 0 }, 'driverThreads'],
    [{ driverThreads: 1e9 }, 'driverThreads'],
    [{ driverTimeout: 0 }, 'driverTimeout'],
    [{ driverTimeout: -1 }, 'driverTimeout'],
    [{ driverTimeout: NaN }, 'driverTimeout'],
    [{ driverTimeout: Infinity }, 'driverTimeout'],
    [{ restartBackoff: 0 }, 'restartBackoff'],
    [{ restartBackoff: -1 }, 'restartBackoff'],
    [{ restartBackoff: NaN }, 'restartBackoff'],
    [{ restartBackoff: 1e6 }, 'restartBackoff'],
    [{ restartBackoffMax: 'x' }, 'restartBackoffMax'],
    [{ restartBackoff: 5, restartBackoffMax: 1 }, 'restartBackoffMax'],
  ]) {
    throwsCode(() => new ControlPlane(s, d, opts), 'Invalid', field)
  }
  // A throwing getter on the driver propagates unchanged.
  assert.throws(() => new ControlPlane(s, { get start() { throw new RangeError('mine') }, stop() {} }), RangeError)

  const cp = new ControlPlane(s, d, { workers: 1, burstReplicas: 1, driverThreads: 1, driverTimeout: 0.5 })
  s.create(replicaSet('web', 1))
  throwsCode(() => cp.scale(), 'Invalid', 'key')
  throwsCode(() => cp.scale(7, 1), 'Invalid', 'key')
  for (const n of [undefined, -1, 1.5, NaN, Infinity, 2 ** 31, '3', null]) {
    throwsCode(() => cp.scale('default/web', n, { kind: 'ReplicaSet' }), 'Invalid', 'replicas')
  }
  throwsCode(() => cp.scale('default/web', 1, { kind: 'Pod' }), 'Invalid', 'kind')
  throwsCode(() => cp.scale('default/web', 1, { kind: 3 }), 'Invalid', 'kind')
  throwsCode(() => cp.scale('default/web', 1, 'ReplicaSet'), 'Invalid', 'options')
  await rejectsCode(() => cp.scaleAsync('default/web', -1), 'Invalid', 'replicas')
  await rejectsCode(() => cp.waitForRollout(), 'Invalid', 'key')
  await rejectsCode(() => cp.waitForRollout('default/web', -1), 'Invalid', 'timeout')
  await rejectsCode(() => cp.waitForRollout('default/web', NaN), 'Invalid', 'timeout')
  await rejectsCode(() => cp.waitForRollout('default/web', '1'), 'Invalid', 'timeout')
  throwsCode(() => cp.rollback('default/web', -1), 'Invalid', 'toRevision')
  throwsCode(() => cp.rollback('default/web', 1.5), 'Invalid', 'toRevision')
  throwsCode(() => cp.rollback(null), 'Invalid', 'key')
  throwsCode(() => cp.pause(1), 'Invalid', 'key')
  throwsCode(() => cp.resume(), 'Invalid', 'key')
  throwsCode(() => cp.promote([]), 'Invalid', 'key')
  throwsCode(() => cp.pause('default/none'), 'NotFound')
  throwsCode(() => cp.endpoints(), 'Invalid', 'serviceKey')
  throwsCode(() => cp.endpoints(42), 'Invalid', 'serviceKey')
  throwsCode(() => cp.pick({}), 'Invalid', 'serviceKey')
  throwsCode(() => cp.pick('default/web', 42), 'Invalid', 'hint')
  await cp.stop()
})

test('process.exit() while a driver call is pending exits cleanly', () => {
  const r = childOk(`
    const s = floyd.Store.memory()
    const cp = new floyd.ControlPlane(s, { start() { console.log('start called'); setTimeout(() => process.exit(0), 20); return new Promise(() => {}) }, stop() {} })
    cp.start()
    s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
    setTimeout(() => {}, 30_000) // would hold the process if exit() did not end it
  `, { timeout: 20_000 })
  assert.match(r.stdout, /start called/)
})

test('a running control plane does not keep the process alive', () => {
  const r = childOk(`
    const s = floyd.Store.memory()
    const cp = new floyd.ControlPlane(s, { async start(i) { console.log('started', i.metadata.name); return { address: 'x:1' } }, stop() {} })
    cp.start()
    s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
    // nothing else keeps the loop alive: the process exits once the start settled, or earlier
    setTimeout(() => {}, 300)
  `, { timeout: 20_000 })
  assert.equal(r.status, 0)
})

test('terminating a worker with a control plane waiting on its driver is safe', () => {
  const r = childOk(`
    const { Worker } = require('node:worker_threads')
    const w = new Worker(\`
      const floyd = require(\${JSON.stringify(require.resolve(${JSON.stringify(require.resolve('..'))}))})
      const { parentPort } = require('node:worker_threads')
      const s = floyd.Store.memory()
      const cp = new floyd.ControlPlane(s, {
        start() { parentPort.postMessage('start'); return new Promise((r) => setTimeout(() => r({ address: 'late:1' }), 200)) },
        stop() {},
      })
      cp.start()
      s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
      setInterval(() => {}, 1000)
    \`, { eval: true })
    ${CP_THREADS}
    w.on('message', async () => {
      await w.terminate()
      // The worker's control plane was stopped with its environment: no thread is left.
      if (process.platform === 'linux') {
        for (let i = 0; i < 500 && cpThreads().length > 0; i++) await new Promise((r) => setTimeout(r, 10))
        assert.deepEqual(cpThreads(), [])
      }
      // The main thread keeps working after the worker's environment is gone.
      await new Promise((r) => setTimeout(r, 400))
      const s = floyd.Store.memory()
      const cp = new floyd.ControlPlane(s, { start: () => ({ address: 'a:1' }), stop() {} })
      cp.start()
      s.create({ kind: 'Instance', metadata: { name: 'j' }, spec: {} })
      for (let i = 0; i < 500 && s.get('Instance', 'default/j').status?.phase !== 'Running'; i++) await new Promise((r) => setTimeout(r, 10))
      assert.equal(s.get('Instance', 'default/j').status.phase, 'Running')
      await cp.stop()
      console.log('main ok')
    })
  `, { timeout: 30_000 })
  assert.match(r.stdout, /main ok/)
})

test('garbage collection of a control plane abandons its pending driver calls', () => {
  const r = childOk(`
    ${CP_THREADS}
    const s = floyd.Store.memory()
    let called = false
    const pending = [] // the driver's promise stays reachable: only the abandonment ends the wait
    ;(() => {
      const cp = new floyd.ControlPlane(s, { start() { called = true; return new Promise((r) => pending.push(r)) }, stop() {} })
      cp.start()
    })()
    s.create({ kind: 'Instance', metadata: { name: 'i' }, spec: {} })
    ;(async () => {
      for (let i = 0; i < 1000; i++) {
        if (called) globalThis.gc()
        const st = s.get('Instance', 'default/i').status
        if (st && st.message && cpThreads().length === 0) { console.log(st.message); return }
        await new Promise((r) => setTimeout(r, 10))
      }
      throw new Error('the pending start was never abandoned, or threads are left: ' + cpThreads())
    })()
  `, { args: ['--expose-gc'], timeout: 30_000 })
  assert.match(r.stdout, /driver\.start was abandoned: the ControlPlane was garbage-collected/)
})

test('examples/node/host.js runs and exits by itself', () => {
  const { spawnSync } = require('node:child_process')
  const path = require('node:path')
  const r = spawnSync(process.execPath, ['--unhandled-rejections=strict', path.join(__dirname, '../../../examples/node/host.js')], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(r.status, 0, r.stdout + r.stderr)
  assert.match(r.stdout, /hello from web-/)
  assert.match(r.stdout, /stopped; stats:/)
})
