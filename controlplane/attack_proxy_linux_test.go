package controlplane_test

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// attackerServer is a sandbox's hostile web server on port 8002: /cookie
// sets a cookie on the control plane's origin and echoes the cookies it was
// sent; /attack.html is a page that, in a browser, tries to read another
// sandbox's page through the path form and the origin's storage, and
// writes what it got into the document.
const attackerServer = `import http.server, sys
VICTIM = sys.argv[1]
PAGE = """<!doctype html><html><body><pre id=out>running</pre><script>
const out = [];
try { localStorage.setItem('k', 'v'); out.push('STORAGE:open'); } catch (e) { out.push('STORAGE:blocked'); }
try { document.cookie = 'stolen=1; path=/'; out.push('COOKIE:' + (document.cookie.includes('stolen') ? 'set' : 'blocked')); } catch (e) { out.push('COOKIE:blocked'); }
fetch('/proxy/' + VICTIM + '/8000/secret.txt', {credentials: 'include'})
  .then(r => r.text()).then(t => out.push('READ:' + t.trim()), e => out.push('READ:blocked'))
  .finally(() => { document.getElementById('out').textContent = 'DONE ' + out.join(' '); });
</script></body></html>""".replace("VICTIM", repr(VICTIM))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/cookie"):
            body = ("got:" + (self.headers.get("Cookie") or "")).encode()
            self.send_response(200)
            self.send_header("Set-Cookie", "session=evil; Path=/")
        else:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", 8002), H).serve_forever()
`

// TestAttackPathFormCrossSandboxRead: a page of one sandbox, served on the
// control plane's origin through /proxy/{id}/{port}/, tries to read another
// sandbox's page, the origin's storage and cookies. The path form answers
// with an opaque origin (CSP sandbox) and carries no cookies either way.
func TestAttackPathFormCrossSandboxRead(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	victim := e.create(t, map[string]any{"timeout": 600}).SandboxID
	attacker := e.create(t, map[string]any{"timeout": 600}).SandboxID
	t.Cleanup(func() {
		e.do("DELETE", "/sandboxes/"+victim, e.key, nil)
		e.do("DELETE", "/sandboxes/"+attacker, e.key, nil)
	})
	e.exec(t, victim, map[string]any{"cmd": "mkdir -p /tmp/www && echo victim-secret > /tmp/www/secret.txt && cd /tmp/www && " +
		"nohup python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &"})
	e.waitServed(t, "/proxy/"+victim+"/8000/secret.txt")
	e.raw(t, "PUT", "/v1/sandboxes/"+attacker+"/files?path=/tmp/attack.py", e.key, strings.NewReader(attackerServer)).want(t, http.StatusOK)
	e.exec(t, attacker, map[string]any{"cmd": "nohup python3 /tmp/attack.py " + victim + " </dev/null >/tmp/attack.log 2>&1 &"})
	e.waitServed(t, "/proxy/"+attacker+"/8002/attack.html")

	t.Run("Headers", func(t *testing.T) {
		r := e.via(t, nil, "/proxy/"+attacker+"/8002/cookie", "", "Cookie", "dashboard=secret")
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if got := string(r.body); got != "got:" {
			t.Errorf("the sandbox received the client's cookies: %q", got)
		}
		if c := r.header.Values("Set-Cookie"); len(c) != 0 {
			t.Errorf("Set-Cookie passed to the shared origin: %q", c)
		}
		csp := r.header.Get("Content-Security-Policy")
		if !strings.HasPrefix(csp, "sandbox ") || strings.Contains(csp, "allow-same-origin") {
			t.Errorf("Content-Security-Policy %q: want sandbox without allow-same-origin", csp)
		}
		// The subdomain form is an origin of its own: the sandbox's
		// cookies are its business there.
		r = e.via(t, nil, "/cookie", "8002-"+attacker+".localhost")
		if r.status != http.StatusOK || len(r.header.Values("Set-Cookie")) != 1 || r.header.Get("Content-Security-Policy") != "" {
			t.Errorf("subdomain form: %d, Set-Cookie %q, CSP %q", r.status, r.header.Values("Set-Cookie"), r.header.Get("Content-Security-Policy"))
		}
	})

	t.Run("Browser", func(t *testing.T) {
		chromium, err := exec.LookPath("chromium")
		if err != nil {
			t.Skip("chromium is not installed (scripts/deps.sh installs it)")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
			"--user-data-dir="+t.TempDir(), "--virtual-time-budget=10000", "--dump-dom",
			e.url+"/proxy/"+attacker+"/8002/attack.html").Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		dom := string(out)
		// The page ran (legitimate use still works) ...
		if !strings.Contains(dom, "DONE ") {
			t.Fatalf("the page's script did not finish: %s", dom)
		}
		// ... and got nothing of the other sandbox nor of the origin.
		for _, want := range []string{"READ:blocked", "STORAGE:blocked", "COOKIE:blocked"} {
			if !strings.Contains(dom, want) {
				t.Errorf("want %s in %s", want, dom)
			}
		}
		if strings.Contains(dom, "victim-secret") {
			t.Errorf("the page read the other sandbox: %s", dom)
		}
	})
}
