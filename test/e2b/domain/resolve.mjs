// A preload (node --import ./resolve.mjs) that makes ROOST_TEST_DOMAIN and
// every name under it resolve to ROOST_TEST_ADDR (default 127.0.0.1) in this
// process, without touching the machine's DNS: the E2B SDK's
// https://api.{domain} and https://{port}-{id}.{domain} then reach roost.
// Every other name resolves as usual. Node's http, https, net, tls and
// fetch all look names up through dns.lookup, which is what is replaced.
//
// With ROOST_TEST_E2B_DOMAIN_ONLY=1 it also puts the process in the SDK's
// domain mode, whatever a runner set: E2B_API_URL and E2B_SANDBOX_URL are
// removed and E2B_DOMAIN is ROOST_TEST_DOMAIN (../shared/e2b-suite/run.sh
// always sets the URLs).
import dns from 'node:dns'

const domain = (process.env.ROOST_TEST_DOMAIN || '').toLowerCase().replace(/\.$/, '')
const address = process.env.ROOST_TEST_ADDR || '127.0.0.1'

if (!domain) throw new Error('resolve.mjs: ROOST_TEST_DOMAIN is not set')
if (process.env.ROOST_TEST_E2B_DOMAIN_ONLY === '1') {
  delete process.env.E2B_API_URL
  delete process.env.E2B_SANDBOX_URL
  process.env.E2B_DOMAIN = domain
}

function ours(hostname) {
  const h = String(hostname).toLowerCase().replace(/\.$/, '')
  return h === domain || h.endsWith('.' + domain)
}

const family = address.includes(':') ? 6 : 4
const systemLookup = dns.lookup

dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  if (!ours(hostname)) return systemLookup.call(dns, hostname, options, callback)
  const all = typeof options === 'object' && options !== null && options.all
  process.nextTick(() => (all ? callback(null, [{ address, family }]) : callback(null, address, family)))
  return {}
}

const systemPromiseLookup = dns.promises.lookup
dns.promises.lookup = async function lookup(hostname, options) {
  if (!ours(hostname)) return systemPromiseLookup.call(dns.promises, hostname, options)
  const all = typeof options === 'object' && options !== null && options.all
  return all ? [{ address, family }] : { address, family }
}
