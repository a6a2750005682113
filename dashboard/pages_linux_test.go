package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// view is one page of the dashboard as a user reaches it.
type view struct {
	name string
	// shot: the page is among the screenshots the README shows.
	shot bool
	open func(t *testing.T)
}

// loaded is true when the page in main has finished loading: its heading
// is there and nothing says it is still loading or reading.
const loaded = `document.querySelector("main h2, main h1") && !/Loading…|Reading…/.test(document.querySelector("main").innerText)`

// views are the dashboard's pages with the sandbox id on them; sign-in
// comes last, since reaching it signs out (and s.signIn back in).
func (s *suite) views(id string) []view {
	b := s.tab
	route := func(hash, ready string) func(t *testing.T) {
		return func(t *testing.T) {
			b.goTo(t, hash)
			b.wait(t, "the page "+hash, loaded+" && ("+ready+")", 30*time.Second, nil)
		}
	}
	sbTab := func(name string, shot bool, ready string) view {
		return view{name: name, shot: shot, open: route("#/sandbox/"+id+"/"+name, fmt.Sprintf(
			`location.hash === "#/sandbox/%s/%s" && document.querySelector('.tabs a[aria-current="page"]') && (%s)`, id, name, ready))}
	}
	return []view{
		{name: "sandboxes", shot: true, open: route("#/sandboxes", sandboxesShown+fmt.Sprintf(` && document.querySelector('tr[data-sandbox=%q]')`, id))},
		{name: "create form", open: func(t *testing.T) {
			route("#/sandboxes", sandboxesShown)(t)
			b.click(t, button("", "New sandbox"))
			b.wait(t, "the create form", `document.querySelector("main form textarea")`, 10*time.Second, nil)
		}},
		sbTab("terminal", true, terminalLines+`.some((l) => /[$#]$/.test(l))`),
		sbTab("files", true, `document.querySelector("#files-list tr[data-name]")`),
		sbTab("ports", true, `document.querySelector('#ports-list a[data-port="8000"]')`),
		sbTab("metrics", true, `document.querySelector("#metrics-latest") && document.querySelector("main .chart canvas")`),
		sbTab("logs", false, `document.querySelector("#logs-list")`),
		sbTab("events", false, `document.querySelector("#events-list li")`),
		{name: "templates", shot: true, open: route("#/templates", `document.querySelector("main table tbody tr")`)},
		{name: "hosts", shot: true, open: route("#/hosts", `document.querySelector("main table tbody tr, main .host")`)},
		{name: "keys", shot: true, open: route("#/keys", `document.querySelector("main table tbody tr")`)},
		{name: "signin", shot: true, open: func(t *testing.T) {
			b.click(t, button("", "Sign out"))
			b.wait(t, "the sign-in form", `document.querySelector("#secret")`, 10*time.Second, nil)
		}},
	}
}

// leave signs back in after the sign-in view.
func (s *suite) leave(t *testing.T, v view) {
	if v.name == "signin" {
		s.tab.goTo(t, "#/sandboxes")
		s.signIn(t)
	}
}

// screenshotDir is $ROOST_SCREENSHOTS (make screenshots: docs/dashboard)
// or a temporary directory.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("ROOST_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (s *suite) screenshots(t *testing.T) {
	id := s.sandbox(t)
	dir := screenshotDir(t)
	b := s.tab
	take := func(t *testing.T, name string) {
		b.settle(t)
		var png []byte
		err := b.within(b.ctx, 15*time.Second, func(ctx context.Context) error {
			var err error
			png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
			return err
		})
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range s.views(id) {
		if !v.shot {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			v.open(t)
			// The key field is empty and the mouse rests outside the page.
			b.do(t, "blur", 5*time.Second, chromedp.Evaluate[chromedp.Void](`document.activeElement?.blur()`))
			take(t, v.name)
			s.leave(t, v)
		})
	}
	t.Run("phone", func(t *testing.T) {
		b.do(t, "a phone's screen", 10*time.Second, chromedp.EmulateViewport(phoneW, phoneH, chromedp.EmulateMobile))
		defer b.do(t, "the desktop's screen", 10*time.Second, chromedp.EmulateViewport(desktopW, desktopH))
		for _, v := range s.views(id) {
			if v.name == "sandboxes" || v.name == "terminal" {
				v.open(t)
				take(t, v.name+"-phone")
			}
		}
	})
	t.Logf("screenshots in %s", dir)
}

// axeSource is axe-core's script from the dashboard's node_modules
// (a devDependency, installed by make dashboard).
func axeSource(t *testing.T) string {
	src, err := os.ReadFile(filepath.Join("web", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		needed(t, "axe-core not installed (make dashboard runs npm ci): %v", err)
	}
	return string(src)
}

// axeViolation is one of axe's findings, cut to what a failure shows.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  string `json:"target"`
		HTML    string `json:"html"`
		Summary string `json:"summary"`
	} `json:"nodes"`
}

// axeResult is what runAxe returns.
type axeResult struct {
	Passes     int            `json:"passes"`
	Violations []axeViolation `json:"violations"`
}

// runAxe is axe.run on the whole page: how many rules passed, and every
// violation.
const runAxe = `axe.run(document, { resultTypes: ["violations"] }).then((r) => ({ passes: r.passes.length,
	violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
		nodes: v.nodes.map((n) => ({ target: n.target.join(" "), html: n.html.slice(0, 240), summary: n.failureSummary })) })) }))`

func (s *suite) accessibility(t *testing.T) {
	id := s.sandbox(t)
	src := axeSource(t)
	b := s.tab
	for _, v := range s.views(id) {
		t.Run(v.name, func(t *testing.T) {
			v.open(t)
			defer s.leave(t, v)
			b.settle(t)
			// The dashboard is one document (routes are fragments): axe,
			// once injected, stays.
			var present bool
			if b.eval(t, `typeof axe !== "undefined"`, &present); !present {
				b.do(t, "inject axe-core", 15*time.Second, chromedp.Evaluate[chromedp.Void](src))
			}
			var res axeResult
			b.eval(t, runAxe, &res)
			if res.Passes == 0 {
				t.Fatalf("axe checked nothing on this page\n%s", b.dump())
			}
			t.Logf("axe: %d rules pass, %d violated", res.Passes, len(res.Violations))
			for _, v := range res.Violations {
				var where strings.Builder
				for _, n := range v.Nodes {
					fmt.Fprintf(&where, "\n    %s\n      %s\n      %s", n.Target, n.HTML, strings.ReplaceAll(n.Summary, "\n", "\n      "))
				}
				// Minor and moderate findings are reported, not failed.
				report := t.Logf
				if v.Impact == "serious" || v.Impact == "critical" {
					report = t.Errorf
				}
				report("axe %s (%s): %s%s", v.ID, v.Impact, v.Help, where.String())
			}
		})
	}
}
