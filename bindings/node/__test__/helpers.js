'use strict'
// Shared by the test files (not a test file itself: `node --test` runs `*.test.js`).
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const PKG = path.resolve(__dirname, '..')
const floyd = require(PKG)

/** Asserts that `fn` throws (or, for a promise, rejects with) an Error with this `code`. */
function throwsCode(fn, code, field) {
  let err
  try {
    fn()
  } catch (e) {
    err = e
  }
  checkErr(err, code, field)
  return err
}

async function rejectsCode(promiseOrFn, code, field) {
  let err
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn)
  } catch (e) {
    err = e
  }
  checkErr(err, code, field)
  return err
}

function checkErr(err, code, field) {
  assert.ok(err, `expected an error with code ${code}, got none`)
  assert.ok(err instanceof Error, `expected an Error, got ${err}`)
  assert.equal(err.code, code, `code of: ${err.message}`)
  if (field !== undefined) {
    assert.equal(err.field, field, `field of: ${err.message}`)
    assert.ok(err.message.includes(field), `message names the field: ${err.message}`)
  }
}

// Data directories this test process made; removed when it exits (each test file runs in
// a process of its own), so test runs do not fill the disk with preallocated segments.
const madeDirs = []
process.on('exit', () => {
  for (const d of madeDirs) fs.rmSync(d, { recursive: true, force: true })
})

/** A fresh data directory, removed when the test process exits. */
function tmpdir() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'floyd-node-test-'))
  madeDirs.push(d)
  return d
}

/**
 * Runs `code` in a fresh node process with `--unhandled-rejections=strict`, so that a crash,
 * an abort or an unhandled rejection fails the test instead of killing the runner. The code
 * sees `floyd` (the package) and `assert`. Returns the spawnSync result.
 */
function child(code, { args = [], timeout = 60_000 } = {}) {
  const prelude = `'use strict'; const floyd = require(${JSON.stringify(PKG)}); const assert = require('node:assert/strict');\n`
  return spawnSync(process.execPath, ['--unhandled-rejections=strict', ...args, '-e', prelude + code], {
    encoding: 'utf8',
    timeout,
    env: { ...process.env, RUST_BACKTRACE: '0' },
  })
}

function childOk(code, opts) {
  const r = child(code, opts)
  assert.equal(r.signal, null, `child killed by ${r.signal}\n${r.stderr}`)
  assert.equal(r.status, 0, `child exited ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  return r
}

function obj(name, extra = {}) {
  return { kind: 'Widget', metadata: { name, ...(extra.metadata || {}) }, spec: extra.spec ?? { size: 1 }, ...(extra.status ? { status: extra.status } : {}) }
}

module.exports = { floyd, PKG, throwsCode, rejectsCode, tmpdir, child, childOk, obj }
