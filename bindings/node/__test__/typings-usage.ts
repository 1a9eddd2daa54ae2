// Compiled by __test__/typings.test.js (tsc --noEmit --strict) against ../index.d.ts.
import { Store, WorkQueue, RateLimiter, FloydError, WatchEvent } from '..'
async function main() {
  const s = Store.memory({ seed: 1 })
  const o = s.create({ kind: 'W', metadata: { name: 'a' } })
  const l = s.list('W', { labelSelector: 'a=b' })
  for await (const ev of s.watch({ kind: 'W', timeout: 1 })) { const e: WatchEvent = ev; e.object.metadata.name }
  const q = new WorkQueue({ rateLimiter: RateLimiter.maxOf([RateLimiter.bucket(), RateLimiter.exponential()]) })
  const item: string | number | null = await q.get(1)
  const snap = await s.snapshot(); snap.path
  try { s.get('W', 'x') } catch (e) { (e as FloydError).code === 'NotFound' }
  return [o, l, item]
}
main()
