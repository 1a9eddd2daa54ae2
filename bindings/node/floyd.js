'use strict'
// The package entry point: the generated native loader (`index.js`, typed by the generated
// `index.d.ts`), plus what napi-rs cannot declare from Rust: `Symbol.asyncIterator` on
// `Watch` (its `next()` and `return()` are native), and the JS half of the fast path for
// calls that take or return whole objects (below). Neither adds to the surface: that is what
// `index.d.ts` says.
const native = require('./index.js')

Object.defineProperty(native.Watch.prototype, Symbol.asyncIterator, {
  value: function () {
    return this
  },
  writable: true,
  configurable: true,
})

// ---- The fast path for objects (README.md, "Objects as JSON text") ----
//
// A napi call costs a few hundred nanoseconds here, and the native walk of an argument makes
// several per property. For the calls that take or return whole objects, this file encodes
// the argument as JSON text in JS and parses the result with JSON.parse: one native call
// each way. `encode` takes only values whose text means exactly what the walk would read
// (plain objects and arrays, strings, safe integers, booleans, null, within the walk's
// depth); for anything else it returns undefined and the native method walks the value
// itself, accepting or refusing it with the walk's own error.
const { isProxy } = require('node:util').types

// Deeper values go to the walk: below the walk's own bound (128, convert.rs MAX_DEPTH) and
// serde_json's recursion limit (128), and far above the core's (64 levels under spec/status).
const MAX_DEPTH = 100
const MAX_ARRAY = 1 << 16 // longer arrays go to the walk, which bounds them by size
const ESCAPE = /["\\\u0000-\u001f]/

function quote(s) {
  return ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"'
}

function encode(v, depth) {
  switch (typeof v) {
    case 'string':
      return quote(v)
    case 'number':
      // Floats go to the walk: their text would need serde_json's exact float parsing.
      return Number.isSafeInteger(v) ? String(v) : undefined
    case 'boolean':
      return v ? 'true' : 'false'
    case 'object': {
      if (v === null) return 'null'
      if (depth >= MAX_DEPTH) return undefined
      if (Array.isArray(v)) {
        if (v.length > MAX_ARRAY || isProxy(v)) return undefined
        let out = '['
        for (let i = 0; i < v.length; i++) {
          const x = v[i]
          const t = x === undefined ? 'null' : encode(x, depth + 1)
          if (t === undefined) return undefined
          out += i === 0 ? t : ',' + t
        }
        return out + ']'
      }
      const proto = Object.getPrototypeOf(v)
      if (proto !== Object.prototype && proto !== null) return undefined
      let out = '{'
      for (const k in v) {
        const x = v[k]
        if (x === undefined) continue
        const t = encode(x, depth + 1)
        if (t === undefined) return undefined
        out += (out.length === 1 ? '' : ',') + quote(k) + ':' + t
      }
      return out + '}'
    }
    default:
      return undefined
  }
}

/** The JSON text of a plain-object argument, or undefined for the walk to convert. */
function objectText(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return undefined
  return encode(obj, 0)
}

const S = native.Store.prototype
const nativeCreate = S.create
const nativeUpdate = S.update
const nativeUpdateStatus = S.updateStatus
const nativeGet = S.get

/** A write through `_writeJson` (op 0 create, 1 update, 2 updateStatus), else `fallback`. */
function write(store, op, fallback, object) {
  const text = objectText(object)
  if (text !== undefined) {
    const out = store._writeJson(op, text)
    if (out !== null) return JSON.parse(out)
  }
  return fallback.call(store, object)
}

S.create = function create(object) {
  return write(this, 0, nativeCreate, object)
}
S.update = function update(object) {
  return write(this, 1, nativeUpdate, object)
}
S.updateStatus = function updateStatus(object) {
  return write(this, 2, nativeUpdateStatus, object)
}
S.get = function get(kind, key) {
  // Arguments that are not strings get `get`'s own errors.
  if (typeof kind !== 'string' || typeof key !== 'string') return nativeGet.call(this, kind, key)
  const out = this._getJson(kind, key)
  return out === null ? null : JSON.parse(out)
}
// Results only: the native side reads the arguments (and names what is wrong with them).
S.list = function list(kind, options) {
  return JSON.parse(this._listJson(kind, options))
}

const I = native.Informer.prototype
const nativeInformerGet = I.get
I.get = function get(key) {
  if (typeof key !== 'string') return nativeInformerGet.call(this, key)
  const out = this._getJson(key)
  return out === null ? null : JSON.parse(out)
}
I.list = function list(options) {
  return JSON.parse(this._listJson(options))
}
I.byIndex = function byIndex(name, value) {
  return JSON.parse(this._byIndexJson(name, value))
}

// For the tests, which check the encoder against the walk (`__test__/fastpath.test.js`).
Object.defineProperty(native, '_objectText', { value: objectText })

module.exports = native
