// Launcher for a local Bluesky PDS (@atproto/pds) with an in-memory PLC
// directory (@did-plc/server), both listening on 127.0.0.1 only.
//
// Usage: node pds.mjs --data-dir DIR --port PORT [--plc-port PORT]
//                     [--access-token-ttl SECONDS] [--stop-on-stdin-close]
// Environment: PDS_ADMIN_PASSWORD (required).
//
// Prints one JSON line to stdout once both servers accept connections:
//   {"ready": true, "url": "http://127.0.0.1:PORT", "plc": "http://localhost:PORT2", ...}
// or, when startup fails, {"ready": false, "error": "..."} and exits with status 1.
// Runs until SIGTERM or SIGINT, then stops both servers and exits with status 0.
// Requires Node 22 or newer because @atproto/pds 0.5.35 declares engines.node >=22.
//
// The PLC directory keeps its operations in memory, so the DIDs of accounts
// created in one run cannot be resolved after a restart. Start each run with an
// empty data directory.

import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'

const LOOPBACK_HOST = '127.0.0.1'

function fail(message) {
  process.stdout.write(JSON.stringify({ ready: false, error: message }) + '\n')
  process.exit(1)
}

function parsePort(name, value, { allowZero }) {
  const port = Number(value)
  const min = allowZero ? 0 : 1
  if (!Number.isInteger(port) || port < min || port > 65535) {
    fail(`invalid --${name} ${JSON.stringify(value)}: expected an integer from ${min} to 65535`)
  }
  return port
}

function parseCommandLine() {
  let values
  try {
    ;({ values } = parseArgs({
      options: {
        'data-dir': { type: 'string' },
        port: { type: 'string' },
        'plc-port': { type: 'string', default: process.env.PDS_PLC_PORT ?? '0' },
        'access-token-ttl': { type: 'string' },
        'stop-on-stdin-close': { type: 'boolean', default: false },
      },
      strict: true,
    }))
  } catch (err) {
    fail(err.message)
  }
  const dataDir = values['data-dir'] ?? process.env.PDS_DATA_DIRECTORY
  if (!dataDir) fail('missing --data-dir (or PDS_DATA_DIRECTORY)')
  const portText = values.port ?? process.env.PDS_PORT
  // The port must be known before the PDS starts because it is part of the
  // service URL that the PDS writes into each account's DID document.
  if (!portText) fail('missing --port (or PDS_PORT)')
  const adminPassword = process.env.PDS_ADMIN_PASSWORD
  if (!adminPassword) fail('missing PDS_ADMIN_PASSWORD in the environment')

  let accessTokenTtl = null
  if (values['access-token-ttl'] !== undefined) {
    accessTokenTtl = Number(values['access-token-ttl'])
    if (!Number.isInteger(accessTokenTtl) || accessTokenTtl < 1) {
      fail(`invalid --access-token-ttl ${JSON.stringify(values['access-token-ttl'])}: expected whole seconds >= 1`)
    }
  }
  return {
    dataDir: path.resolve(dataDir),
    port: parsePort('port', portText, { allowZero: false }),
    plcPort: parsePort('plc-port', values['plc-port'], { allowZero: true }),
    adminPassword,
    accessTokenTtl,
    stopOnStdinClose: values['stop-on-stdin-close'],
  }
}

// PDS.start() and PlcServer.start() call app.listen(port), which binds every
// interface. Wrapping app.listen adds the host so both servers stay on loopback.
function bindToLoopback(app) {
  const listen = app.listen.bind(app)
  app.listen = (port, ...rest) => listen(port, LOOPBACK_HOST, ...rest)
}

// @atproto/pds 0.5.35 hard-codes a 120-minute access token lifetime
// (createAccessToken in dist/account-manager/helpers/auth.js) and has no config
// option for it. The PDS signs these tokens with jose's SignJWT and the header
// typ "at+jwt", so replacing the expiry of such tokens shortens their lifetime.
// Refresh tokens (typ "refresh+jwt") keep their 90-day lifetime. The expiry is
// rounded up to whole seconds, so a token stays valid for at least ttlSeconds.
// NOTE: this relies on the PDS using the same jose module instance as this
// launcher, which package.json ensures by pinning the jose version in the lock.
async function shortenAccessTokens(ttlSeconds) {
  const { SignJWT } = await import('jose')
  const setExpirationTime = SignJWT.prototype.setExpirationTime
  SignJWT.prototype.setExpirationTime = function (input) {
    if (this._protectedHeader?.typ === 'at+jwt') {
      return setExpirationTime.call(this, Math.ceil(Date.now() / 1000) + ttlSeconds)
    }
    return setExpirationTime.call(this, input)
  }
}

async function generateSecrets() {
  const { Secp256k1Keypair } = await import('@atproto/crypto')
  const rotationKey = await Secp256k1Keypair.create({ exportable: true })
  const rotationKeyBytes = await rotationKey.export()
  return {
    jwtSecret: crypto.randomBytes(32).toString('hex'),
    dpopSecret: crypto.randomBytes(32).toString('hex'),
    plcRotationKeyHex: Buffer.from(rotationKeyBytes).toString('hex'),
  }
}

async function startPlc(port) {
  // @did-plc/server is CommonJS, and its PlcServer.create({ db, port }) serves
  // the PLC directory API from the given database.
  const { PlcServer, Database } = await import('@did-plc/server')
  const plc = PlcServer.create({ db: Database.mock(), port })
  bindToLoopback(plc.app)
  const server = await plc.start()
  return { plc, port: server.address().port }
}

async function startPds(options, plcUrl) {
  const { PDS, envToCfg, envToSecrets } = await import('@atproto/pds')
  const secrets = await generateSecrets()
  // The keys mirror the ServerEnvironment type that readEnv() in
  // @atproto/pds/dist/config/env.js builds from PDS_* variables.
  const env = {
    port: options.port,
    // With hostname "localhost" the PDS uses http://localhost:PORT as its
    // public URL, did:web:localhost as its DID and ".test" as the handle domain.
    hostname: 'localhost',
    devMode: true,
    dataDirectory: options.dataDir,
    blobstoreDiskLocation: path.join(options.dataDir, 'blobs'),
    blobstoreDiskTmpLocation: path.join(options.dataDir, 'blobs-tmp'),
    didPlcUrl: plcUrl,
    inviteRequired: false,
    // No crawlers, app view, moderation service, report service, email or
    // Redis are configured, so startup and the repo API stay on loopback.
    // Requests that name another host, such as resolveHandle for a handle
    // outside ".test", still make the PDS look that host up.
    crawlers: [],
    rateLimitsEnabled: false,
    jwtSecret: secrets.jwtSecret,
    dpopSecret: secrets.dpopSecret,
    adminPassword: options.adminPassword,
    plcRotationKeyK256PrivateKeyHex: secrets.plcRotationKeyHex,
  }
  const cfg = envToCfg(env)
  const pds = await PDS.create(cfg, envToSecrets(env))
  bindToLoopback(pds.app)
  const server = await pds.start()
  return { pds, port: server.address().port }
}

async function main() {
  const options = parseCommandLine()
  // pino loggers in both packages write to stdout by default, which would mix
  // log lines into the ready line. The loggers read LOG_DESTINATION when their
  // modules load, which happens in the dynamic imports below.
  process.env.LOG_DESTINATION ??= '/dev/stderr'

  await fs.mkdir(options.dataDir, { recursive: true })
  if (options.accessTokenTtl !== null) {
    await shortenAccessTokens(options.accessTokenTtl)
  }

  let plc = null
  let pds = null
  let stopping = null
  const stop = (reason) => {
    stopping ??= (async () => {
      process.stderr.write(`pds.mjs: stopping (${reason})\n`)
      let status = 0
      for (const server of [pds, plc]) {
        try {
          await server?.destroy()
        } catch (err) {
          process.stderr.write(`pds.mjs: shutdown error: ${err.stack ?? err}\n`)
          status = 1
        }
      }
      process.exit(status)
    })()
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  if (options.stopOnStdinClose) {
    // Only the parent has the write end of stdin, so end-of-file means the
    // parent exited, possibly without sending SIGTERM.
    process.stdin.on('end', () => stop('stdin closed'))
    process.stdin.resume()
  }

  try {
    const plcStarted = await startPlc(options.plcPort)
    plc = plcStarted.plc
    // The fetch wrapper that the PDS resolves DIDs with (@atproto-labs/fetch,
    // requireHostHeaderTransform) rejects IP-literal URLs with "Invalid
    // hostname", so the URL names localhost although the server binds 127.0.0.1.
    const plcUrl = `http://localhost:${plcStarted.port}`
    const pdsStarted = await startPds(options, plcUrl)
    pds = pdsStarted.pds
    process.stdout.write(
      JSON.stringify({
        ready: true,
        url: `http://${LOOPBACK_HOST}:${pdsStarted.port}`,
        public_url: pds.ctx.cfg.service.publicUrl,
        plc: plcUrl,
        service_did: pds.ctx.cfg.service.did,
        handle_domains: pds.ctx.cfg.identity.serviceHandleDomains,
        pid: process.pid,
      }) + '\n',
    )
  } catch (err) {
    process.stderr.write(`pds.mjs: startup failed: ${err.stack ?? err}\n`)
    const code = err.code ? ` (${err.code})` : ''
    process.stdout.write(JSON.stringify({ ready: false, error: `${err.message}${code}` }) + '\n')
    try {
      await pds?.destroy()
      await plc?.destroy()
    } finally {
      process.exit(1)
    }
  }
}

await main()
