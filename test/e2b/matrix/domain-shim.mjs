// A stand-in for domain + TLS mode, preloaded (node --import) into the SDK
// releases that know only E2B_DOMAIN: before 2.6 the JS SDK has no
// E2B_API_URL and before 2.7 no E2B_SANDBOX_URL, so it always calls
// https://api.{domain} and https://{port}-{sandboxID}.{domain}. Until roost
// serves that (roost up --domain D --tls), this rewrites those requests, and
// only those, to roost's plain-HTTP loopback address in header mode
// (E2b-Sandbox-Id and E2b-Sandbox-Port), as the newer SDKs send them in URL
// mode. The SDK itself runs unmodified; matrix.mjs labels its rows "shim".
//
// Env: E2B_DOMAIN (the domain the SDK is given), ROOST_MATRIX_URL (roost up's
// address, http://127.0.0.1:PORT).

const domain = process.env.E2B_DOMAIN
const roost = process.env.ROOST_MATRIX_URL
if (!domain || !roost) throw new Error('domain-shim: E2B_DOMAIN and ROOST_MATRIX_URL must be set')

const sandboxHost = new RegExp(`^(\\d+)-([a-z0-9]+)\\.${domain.replaceAll('.', '\\.')}$`)
const realFetch = globalThis.fetch

// Where a request for url goes instead, and the headers it gains, or null
// when it is not one of the SDK's requests to the domain.
function reroute(url) {
  if (url.protocol !== 'https:') return null
  const to = new URL(url.pathname + url.search, roost)
  if (url.hostname === `api.${domain}`) return { to, headers: {} }
  const m = sandboxHost.exec(url.hostname)
  if (!m) return null
  return { to, headers: { 'E2b-Sandbox-Port': m[1], 'E2b-Sandbox-Id': m[2] } }
}

globalThis.fetch = async function fetchThroughShim(input, init) {
  const request = new Request(input, init)
  const route = reroute(new URL(request.url))
  if (!route) return realFetch(request)
  const headers = new Headers(request.headers)
  for (const [k, v] of Object.entries(route.headers)) headers.set(k, v)
  const body = request.body && { body: request.body, duplex: 'half' }
  return realFetch(new Request(route.to, { method: request.method, headers, signal: request.signal, redirect: request.redirect, ...body }))
}
