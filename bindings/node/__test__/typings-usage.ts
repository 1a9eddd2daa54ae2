// Compiled by __test__/typings.test.js (tsc --noEmit --strict) against ../index.d.ts.
import { Store, WorkQueue, RateLimiter, FloydError, WatchEvent, ControlPlane, ControlPlaneStats, Informer, InformerStats } from '..'
async function main() {
  const s = Store.memory({ seed: 1 })
  const o = s.create({ kind: 'W', metadata: { name: 'a' } })
  const l = s.list('W', { labelSelector: 'a=b' })
  for await (const ev of s.watch({ kind: 'W', timeout: 1 })) { const e: WatchEvent = ev; e.object.metadata.name }
  const q = new WorkQueue({ rateLimiter: RateLimiter.maxOf([RateLimiter.bucket(), RateLimiter.exponential()]) })
  const item: string | number | null = await q.get(1)
  const snap = await s.snapshot(); snap.path
  try { s.get('W', 'x') } catch (e) { (e as FloydError).code === 'NotFound' }
  const cp = new ControlPlane(s, {
    async start(i) { return { address: `${i.metadata.name}:80` } },
    stop() {},
  }, { workers: 1, driverTimeout: 5 })
  const probing = new ControlPlane(s, {
    start() {},
    stop() {},
    async probe(i, p) { return p.type === 'readiness' && p.periodSeconds > 0 && i.metadata.name !== '' },
  })
  const probes: number = probing.stats().probes + st0().probeFailures + st0().probeRestarts
  function st0(): ControlPlaneStats { return probing.stats() }
  await probing.stop()
  cp.start()
  const addr: string | null = cp.pick('default/web', 'client-1')
  const eps: string[] = cp.endpoints('default/web')
  const scaled = cp.scale('default/web', 3, { kind: 'ReplicaSet' }); scaled.spec
  const st: ControlPlaneStats = cp.stats()
  const timeouts: number = st.driverTimeouts + st.driverLateResults + st.driverThreadsReplaced
  const exited: void = cp.reportExit('default/web-1', 'segfault')
  await cp.reportExitAsync('default/web-1', 'segfault')
  await cp.stop()
  const inf = new Informer(s, 'W', { namespace: 'default', labelSelector: { matchLabels: { a: 'b' } }, resync: 0 })
  inf.addIndex('n', 'namespace'); inf.addIndex('f', 'field:spec.node'); inf.addIndex('l', 'label:app')
  inf.addEventHandler({ onAdd(o, initial: boolean) { o.metadata.name }, onDelete(o) { const u: true | undefined = o.finalStateUnknown } })
  inf.start()
  const synced: boolean = await inf.waitForSync(1)
  const got = inf.get('default/a'); const objs = inf.byIndex('n', 'default'); const vals: string[] = inf.listIndexValues('n')
  const ok: boolean = await inf.waitForVersion(o.metadata.resourceVersion ?? 0, 1)
  const ist: InformerStats = inf.stats(); inf.stop()
  return [o, l, item, addr, eps, st, timeouts, exited, probes]
}
main()
