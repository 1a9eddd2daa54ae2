'use strict'
// A small host application: floyd's controllers run "web" as a ReplicaSet of in-process HTTP
// servers (the driver), a Service load-balances requests over the ready ones, and a scale-down
// stops the surplus. Run: `node examples/node/host.js` (after building bindings/node).
const http = require('node:http')
const path = require('node:path')
const { Store, ControlPlane } = require(path.join(__dirname, '../../bindings/node'))

// The driver: start() runs an instance and resolves with its address; stop() stops it;
// probe() answers the instances' readiness probe with a GET on the server it started.
const servers = new Map()
const driver = {
  async start(instance) {
    const name = instance.metadata.name
    const server = http.createServer((req, res) => res.end(`hello from ${name} (version ${instance.spec.version})\n`))
    await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
    servers.set(name, server)
    return { address: `127.0.0.1:${server.address().port}` }
  },
  async stop(instance) {
    const server = servers.get(instance.metadata.name)
    servers.delete(instance.metadata.name)
    if (server) await new Promise((resolve) => server.close(resolve))
  },
  async probe(instance, probe) {
    const server = servers.get(instance.metadata.name)
    if (!server) return false
    try {
      await get(`127.0.0.1:${server.address().port}`, probe.httpGet.path)
      return true
    } catch {
      return false
    }
  },
}

const get = (address, urlPath = '/') =>
  new Promise((resolve, reject) => {
    http.get(`http://${address}${urlPath}`, (res) => {
      let body = ''
      res.on('data', (c) => (body += c)).on('end', () => resolve(body.trim()))
    }).on('error', reject)
  })

async function until(cond, what) {
  for (let i = 0; i < 1000; i++) {
    try {
      if (cond()) return
    } catch {} // the control plane's cache may not have seen a new object yet
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function main() {
  const store = Store.memory()
  const cp = new ControlPlane(store, driver, { workers: 2 })
  cp.start()
  store.create({ kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' } } })
  store.create({
    kind: 'ReplicaSet',
    metadata: { name: 'web' },
    spec: {
      replicas: 3,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: { version: '1', readinessProbe: { httpGet: { path: '/', port: 80 }, periodSeconds: 1 } },
      },
    },
  })
  await until(() => cp.endpoints('default/web').length === 3, '3 ready instances')
  console.log('endpoints:', cp.endpoints('default/web').join(' '))
  for (let i = 0; i < 4; i++) console.log(' ', await get(cp.pick('default/web')))

  cp.scale('default/web', 1, { kind: 'ReplicaSet' })
  await until(() => servers.size === 1 && cp.endpoints('default/web').length === 1, 'the scale-down')
  console.log('after scale to 1:', cp.endpoints('default/web').join(' '))

  cp.scale('default/web', 0, { kind: 'ReplicaSet' })
  await until(() => servers.size === 0, 'the scale to 0')
  await cp.stop()
  console.log('stopped; stats:', JSON.stringify(cp.stats()))
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
