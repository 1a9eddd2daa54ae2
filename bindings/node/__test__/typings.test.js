'use strict'
// index.d.ts is what TypeScript users get: it must compile under --strict, and describe the
// package as used (including `for await` over a Watch, which floyd.js adds).
const { test } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

test('index.d.ts type-checks a typical use under tsc --strict', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2020', '--module', 'commonjs', path.join(__dirname, 'typings-usage.ts')], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stdout + r.stderr)
})
