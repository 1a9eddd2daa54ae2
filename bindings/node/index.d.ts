typings/header.d.ts
/**
 * Which binding artifact the generated loader actually loaded: `'native'` for
 * a native addon, otherwise the `platformArchABI` of the WASI flavor. Every
 * flavor napi-rs can build is listed, because `NAPI_RS_NATIVE_LIBRARY_PATH`
 * can point the loader at a WASI artifact this package does not build itself.
 */
export declare const __napiBindingTarget: 'native' | 'wasm32-wasi' | 'wasm32-wasip1'

/**
 * Per-item backoff and overall rate limits for `WorkQueue.addRateLimited`, as client-go's
 * rate limiters. Durations are float seconds; NaN, negative, infinite or out-of-range
 * values are `Invalid`. A limiter is shared state: the same object given to two queues
 * counts failures for both.
 */
export declare class RateLimiter {
  /**
   * Per-item `base · 2^(n-1)` seconds for the n-th consecutive failure, capped at `max`
   * (defaults 0.005 and 1000).
   */
  static exponential(base?: number | null, max?: number | null): RateLimiter
  /** Per-item `fast` seconds for the first `maxFastAttempts` failures, then `slow`. */
  static fastSlow(fast: number, slow: number, maxFastAttempts: number): RateLimiter
  /**
   * One token bucket over all items: `qps` tokens per second (default 10; `Infinity`
   * never delays), `burst` deep (default 100; 0 delays forever), starting full.
   */
  static bucket(qps?: number | null, burst?: number | null): RateLimiter
  /** The largest delay of `limiters`; each of them records every failure. */
  static maxOf(limiters: RateLimiter[]): RateLimiter
  /**
   * client-go's `DefaultControllerRateLimiter`: the max of `exponential(0.005, 1000)` and
   * `bucket(10, 100)`.
   */
  static defaultController(): RateLimiter
  /** A new limiter: this one's delay capped at `maxDelay` seconds (sharing this one's state). */
  withMaxWait(maxDelay: number): RateLimiter
  /**
   * The delay in seconds before `item` may be retried (records a failure for per-item
   * limiters).
   */
  when(item: string | number): number
  /** Clears `item`'s failure history. */
  forget(item: string | number): void
  /** Failures on record for `item`. */
  numRequeues(item: string | number): number
}

/**
 * The embedded API server over the event log: objects are plain JS objects in the
 * Kubernetes JSON shape (`{kind, metadata: {name, namespace, labels, ...}, spec, status}`).
 * Every method throws an `Error` whose `code` is the floyd error kind (`'NotFound'`,
 * `'AlreadyExists'`, `'Conflict'`, `'Invalid'`, `'Expired'`, `'ShutDown'`, `'Corrupt'`,
 * `'Io'`, `'Internal'`); `Invalid` errors name the field in the message and in `field`.
 */
export declare class Store {
  /**
   * Opens (or creates) a store in `path` (default `./floyd-data`). Options:
   * `durability` — `'none'`, `'batch'` (default: group commit every 5 ms / 1 MiB) or
   * `'always'` (writes resolve after `fsync`; only the `…Async` writes are allowed);
   * `segmentSize` — bytes per log segment; `seed` — for generated uids and names.
   * Recovery runs synchronously (replay of the log after the newest snapshot).
   */
  static open(path?: string | null, options?: StoreOptions | null): Store
  /**
   * A store in memory: same semantics, nothing persisted. Options as for `open`
   * (`durability` has no effect here).
   */
  static memory(options?: StoreOptions | null): Store
  /**
   * Creates an object and returns it as stored: `metadata.uid`, `resourceVersion`,
   * `generation` (1) and `creationTimestamp` set. `AlreadyExists` if the key is taken.
   */
  create(object: FloydObject): FloydObject
  /** `create` as a promise, run off the event loop (works in every durability mode). */
  createAsync(object: FloydObject): Promise<FloydObject>
  /**
   * The object of `kind` at `key` (`"namespace/name"`, or `"name"` for cluster-scoped
   * kinds), or `null`.
   */
  get(kind: string, key: string): FloydObject | null
  /**
   * Objects of `kind`, sorted by key, consistent at `resourceVersion`. Options:
   * `namespace`, `labelSelector` (the Kubernetes string form `app=web,tier!=db,env in
   * (a,b),!legacy`, or `{matchLabels, matchExpressions}`).
   */
  list(kind: string, options?: ListOptions | null): ObjectList
  /**
   * Replaces an object's metadata and spec (status is kept). `Conflict` if
   * `metadata.resourceVersion` is set and stale; `generation` grows when the spec changes.
   */
  update(object: FloydObject): FloydObject
  /** `update` as a promise, run off the event loop. */
  updateAsync(object: FloydObject): Promise<FloydObject>
  /** Replaces only an object's status; `generation` is unchanged. */
  updateStatus(object: FloydObject): FloydObject
  /** `updateStatus` as a promise, run off the event loop. */
  updateStatusAsync(object: FloydObject): Promise<FloydObject>
  /**
   * Deletes an object and returns its last state. `Conflict` if `resourceVersion` (a
   * number or the object's decimal string) is given and stale.
   */
  delete(kind: string, key: string, resourceVersion?: number | string | null): FloydObject
  /** `delete` as a promise, run off the event loop. */
  deleteAsync(kind: string, key: string, resourceVersion?: number | string | null): Promise<FloydObject>
  /**
   * Events of `kind` (every kind if absent) after `fromVersion` (default 0: first a
   * synthetic `ADDED` for every current object), then the tail. Iterate it with
   * `for await (const ev of store.watch({kind}))`; iteration ends after `timeout` seconds
   * without an event (absent: follows until the watch or the store is closed).
   * `Expired` if `fromVersion` is older than compaction kept.
   */
  watch(options?: WatchOptions | null): Watch
  /**
   * Writes a snapshot of every object at one version and compacts the log; resolves
   * with `{resourceVersion, path, objects, bytes, compactedSegments}` (`path` is `null`
   * for memory stores).
   */
  snapshot(): Promise<SnapshotSummary>
  /** Counters describing the store. */
  stats(): StoreStats
  /** The newest applied resource version. */
  resourceVersion(): number
  /** The data directory, or `null` for a memory store. */
  get path(): string | null
  /** Whether `close()` was called. */
  get closed(): boolean
  /** Closes the store: later calls fail with `ShutDown`, watches end. Idempotent. */
  close(): void
}

/**
 * A stream of store events (`{type: 'ADDED' | 'MODIFIED' | 'DELETED', object}`), from
 * `Store.watch()`. An async iterator: `for await (const ev of watch)`. Leaving the loop
 * early (`break`) closes it.
 */
export declare class Watch {
  /**
   * The next event: resolves `{value: event, done: false}`, or `{done: true}` once the
   * watch timed out, was closed, or its store was closed. Waits on a thread of its own,
   * never on the event loop.
   */
  next(): Promise<IteratorResult<WatchEvent, undefined>>
  /** The next event if one is ready now, else `null` (also once the watch is closed). */
  tryNext(): WatchEvent | null
  /**
   * Ends the iteration (what `break` in `for await` calls): resolves `{done: true}`, and
   * a pending `next()` resolves `{done: true}` too.
   */
  return(): Promise<IteratorResult<WatchEvent, undefined>>
  /** Closes the watch; idempotent. */
  close(): void
  /** The log position of the next event the watch will look at. */
  get position(): number
}

/**
 * A rate-limited, delaying, de-duplicating work queue with client-go's semantics: a key is
 * never handed to two workers at once, adds of a waiting key coalesce, and a key re-added
 * while it is processed runs once more afterwards.
 *
 * ```js
 * const q = new WorkQueue()
 * q.add('default/web')
 * const key = await q.get()   // null once shut down and drained
 * try { reconcile(key); q.forget(key) } catch { q.addRateLimited(key) } finally { q.done(key) }
 * ```
 */
export declare class WorkQueue {
  /**
   * Options: `rateLimiter` (default `RateLimiter.defaultController()`), `name` (for
   * metrics).
   */
  constructor(options?: WorkQueueOptions | null)
  /** Marks `item` as needing processing. Ignored after shut-down (as client-go). */
  add(item: string | number): void
  /** Adds `item` after `seconds`; if it is already waiting, the earlier time wins. */
  addAfter(item: string | number, seconds: number): void
  /** Adds `item` after the rate limiter's delay for it (recording a failure). */
  addRateLimited(item: string | number): void
  /**
   * The next item (it is then processing until `done(item)`), waiting up to `timeout`
   * seconds (absent: until one comes or the queue shuts down). Resolves `null` on timeout
   * and once the queue is shut down and drained. Never blocks the event loop.
   */
  get(timeout?: number | null): Promise<string | number | null>
  /** The next item if one is ready now, else `null`. */
  tryGet(): string | number | null
  /** Marks `item` as finished; if it was added while processing, it is queued again. */
  done(item: string | number): void
  /** Clears `item`'s rate-limiter history (call `done` too). */
  forget(item: string | number): void
  /** Failures the rate limiter has on record for `item`. */
  numRequeues(item: string | number): number
  /** Items queued and ready to hand out. */
  len(): number
  /** Same as `len()`. */
  get length(): number
  /** The queue's name, if it has one. */
  get name(): string | null
  /**
   * Stops accepting adds and resolves every pending `get()` (with the items still queued,
   * then `null`). Idempotent.
   */
  shutDown(): void
  /**
   * Shuts down, then resolves once every queued item has been handed out and every
   * handed-out item is `done` (workers must keep calling `get` and `done`).
   */
  shutDownWithDrain(): Promise<void>
  /** Whether a shut-down has begun. */
  shuttingDown(): boolean
  /**
   * client-go's queue metrics: `depth`, `adds`, `retries`, `queueDuration` and
   * `workDuration` histograms (`{buckets: [[le, cumulativeCount], ...], count, sum}`,
   * seconds), `unfinishedWorkSeconds`, `longestRunningProcessorSeconds`.
   */
  metrics(): QueueMetrics
}

/**
 * Test-only: panics inside the binding, to prove that a Rust panic surfaces as an `Error`
 * with `code: 'Internal'` and that the process survives. Not part of the API.
 */
export declare function _panicForTest(): void

/**
 * Test-only: like `_panicForTest`, but the panic happens on a worker thread behind a
 * promise, to prove that asynchronous paths contain panics too. Not part of the API.
 */
export declare function _panicForTestAsync(): Promise<void>
