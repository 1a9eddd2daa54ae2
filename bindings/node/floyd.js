'use strict'
// The package entry point: the generated native loader (`index.js`, typed by the generated
// `index.d.ts`) plus the one protocol napi-rs cannot declare from Rust, `Symbol.asyncIterator`
// on `Watch` (its `next()` and `return()` are native). Nothing else belongs here: the binding
// is a translation layer, and its surface is what `index.d.ts` says.
const native = require('./index.js')

Object.defineProperty(native.Watch.prototype, Symbol.asyncIterator, {
  value: function () {
    return this
  },
  writable: true,
  configurable: true,
})

module.exports = native
