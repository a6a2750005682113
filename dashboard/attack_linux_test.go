package dashboard_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"roost.dev/roost/testenv"
)

// stealPage is a sandbox's page that tries every way to the dashboard's
// key a page of the same browser has: the storage of its origin, the
// window that opened it, the dashboard in a frame, and the API itself.
// It writes what it got into #out as JSON.
const stealPage = `<!doctype html><meta charset="utf-8"><title>steal</title><pre id="out">running</pre>
<script>
const dash = new URL(location.href).searchParams.get("dashboard");
const got = {};
const attempt = (name, f) => { try { got[name] = String(f() ?? "none"); } catch (e) { got[name] = "blocked: " + e.name; } };
attempt("sessionStorage", () => sessionStorage.getItem("roost.credential"));
attempt("localStorage", () => localStorage.length ? JSON.stringify(Object.assign({}, localStorage)) : "none");
attempt("cookie", () => document.cookie || "none");
attempt("opener", () => window.opener && window.opener.sessionStorage.getItem("roost.credential"));
const frame = document.createElement("iframe");
frame.src = dash + "/";
document.body.append(frame);
frame.onload = async () => {
  attempt("frame", () => frame.contentWindow.sessionStorage.getItem("roost.credential"));
  try {
    const res = await fetch(dash + "/teams", { credentials: "include" });
    got.api = "status " + res.status;
  } catch (e) {
    got.api = "blocked: " + e.name;
  }
  document.getElementById("out").textContent = JSON.stringify(got);
};
</script>`

// TestAttackDashboardKeyTheft: a sandbox's page, opened in the browser
// that is signed in to the dashboard (in the dashboard's own tab, through
// both proxy forms, and from its port link), tries to read the API key
// from its origin's storage, the window that opened it, the dashboard in
// a frame and the API. The path form's opaque origin, the subdomain's
// origin of its own, the dashboard's frame-ancestors policy, noopener
// links and a key that is never a cookie stop each.
func TestAttackDashboardKeyTheft(t *testing.T) {
	requireDashboard(t)
	chrome := requireChromium(t)
	s := &suite{env: testenv.Start(t), tab: startBrowser(t, chrome)}
	b := s.tab
	b.do(t, "open the dashboard", 30*time.Second, chromedp.Navigate(s.env.URL+"/"))
	s.signIn(t)

	var sb struct{ SandboxID string }
	if code := s.api(t, "POST", "/sandboxes", map[string]any{"templateID": "base", "timeout": 300}, &sb); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	id := sb.SandboxID
	putFile(t, s.env, id, "/tmp/www/steal.html", stealPage)
	s.exec(t, id, `cd /tmp/www && (setsid nohup python3 -m http.server 8000 >/dev/null 2>&1 &)`)
	port := s.env.URL[strings.LastIndex(s.env.URL, ":")+1:]
	query := "?dashboard=" + s.env.URL
	pages := map[string]string{
		"path form":      s.env.URL + "/proxy/" + id + "/8000/steal.html" + query,
		"subdomain form": "http://8000-" + id + ".localhost:" + port + "/steal.html" + query,
	}

	// The worst case: the page loads in the dashboard's own tab, whose
	// session storage holds the key for the dashboard's origin.
	for form, u := range pages {
		b.do(t, "open the "+form+" page in the dashboard's tab", 30*time.Second, chromedp.Navigate(u))
		checkNothingStolen(t, b, form, s.env.APIKey)
		b.do(t, "back to the dashboard", 30*time.Second, chromedp.Navigate(s.env.URL+"/"))
	}

	// The way a user gets there: the ports tab's link, opened in a new tab
	// by the dashboard.
	b.goTo(t, "#/sandbox/"+id+"/ports")
	b.wait(t, "the port's link", `document.querySelector('#ports-list a[data-port-path="8000"]')`, 60*time.Second, nil)
	var rel string
	b.eval(t, `document.querySelector('#ports-list a[data-port-path="8000"]').rel`, &rel)
	if !strings.Contains(rel, "noopener") {
		t.Errorf("the port link's rel is %q: the page it opens could reach the dashboard's window", rel)
	}
	opened := chromedp.WaitNewTarget(b.ctx, func(info *target.Info) bool { return strings.Contains(info.URL, "steal.html") })
	b.do(t, "open the link the way a click does", 15*time.Second, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const a = document.querySelector('#ports-list a[data-port-path="8000"]'); a.href = a.href + "steal.html" + %q; a.click(); })()`, query)))
	select {
	case tid := <-opened:
		ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(tid))
		t.Cleanup(cancel)
		checkNothingStolen(t, attach(t, ctx, "attach to the opened tab"), "path form from the port link", s.env.APIKey)
	case <-time.After(30 * time.Second):
		t.Fatal("the port link opened no new tab")
	}
}

// checkNothingStolen waits for the page on tab to report and fails t if
// it read the key, or anything but a refusal, anywhere.
func checkNothingStolen(t *testing.T, tab *tab, form, key string) {
	t.Helper()
	var report string
	tab.wait(t, "the "+form+" page's report", `(() => { const t = document.getElementById("out")?.textContent; return t && t !== "running" && t; })()`, 30*time.Second, &report)
	t.Logf("%s: %s", form, report)
	var got map[string]string
	if err := json.Unmarshal([]byte(report), &got); err != nil {
		t.Fatalf("%s: the report %q: %v", form, report, err)
	}
	for what, v := range got {
		refused := v == "none" || v == "null" || strings.HasPrefix(v, "blocked: ") || what == "api" && v == "status 401"
		if !refused || strings.Contains(v, key) {
			t.Errorf("%s: the sandbox's page got through to the %s: %s", form, what, v)
		}
	}
}

// putFile writes content to path in the sandbox through the API.
func putFile(t *testing.T, env *testenv.Env, id, path, content string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, env.URL+"/v1/sandboxes/"+id+"/files?path="+url.QueryEscape(path), strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", env.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("write %s: %d", path, res.StatusCode)
	}
}
