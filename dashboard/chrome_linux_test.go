package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"roost.dev/roost/dashboard"
)

// The desktop size every page is tested and shown at; the phone size of
// the narrow screenshots.
const (
	desktopW, desktopH = 1280, 800
	phoneW, phoneH     = 390, 844
)

// needed skips t for a prerequisite this machine lacks, except in CI
// (CI=true), where a browser test that cannot run is a failure: CI
// installs Chromium (scripts/deps.sh) and builds the dashboard (make
// test-go), so a missing one means the suite silently lost its browser.
func needed(t *testing.T, format string, args ...any) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

// requireDashboard checks that this test binary embeds a built dashboard:
// go test compiles in whatever web/dist held, so make dashboard must run
// first.
func requireDashboard(t *testing.T) {
	t.Helper()
	if !dashboard.New().Built() {
		needed(t, "dashboard not built (web/dist has no index.html): run make dashboard before go test")
	}
}

// requireChromium returns the path of Debian's chromium.
func requireChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		needed(t, "no chromium on PATH (scripts/deps.sh installs Debian's): %v", err)
	}
	return path
}

// tab is one browser tab and what its page wrote to the console.
type tab struct {
	ctx context.Context // the tab's: a timeout derived from it bounds one wait

	mu      sync.Mutex // guards console
	console []string   // the page's errors, warnings and exceptions
}

// startBrowser starts headless Chromium with a fresh profile and opens one
// tab; both end with t.
func startBrowser(t *testing.T, path string) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root, where Chromium's sandbox refuses to start
		chromedp.Headless,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(desktopW, desktopH),
		// The dashboard may reach nothing beyond loopback; no proxy
		// from the environment gets between the browser and the stack.
		chromedp.Flag("no-proxy-server", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	return attach(t, ctx, "start chromium")
}

// attach runs the first action of a new tab's context, which opens the
// tab (and starts the browser, for the first). That Do binds the tab's
// life to the context it is given, so it cannot carry a timeout of its
// own: a tab that does not come up is caught by a timer instead.
func attach(t *testing.T, ctx context.Context, what string) *tab {
	t.Helper()
	opened := make(chan error, 1)
	go func() { opened <- chromedp.Do(ctx) }()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s: not within a minute", what)
	}
	b := &tab{ctx: ctx}
	go b.collectConsole(chromedp.Console(ctx))
	return b
}

// newTab opens another tab in the same browser, closed when t ends.
func (b *tab) newTab(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	return attach(t, ctx, "open a tab")
}

// within runs f on a context of the tab bounded by d. Cancelling a
// context derived from the tab's ends the action, not the tab.
func (b *tab) within(ctx context.Context, d time.Duration, f func(context.Context) error) error {
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(tctx)
}

// collectConsole keeps the page's complaints until the tab ends.
func (b *tab) collectConsole(msgs func(func(chromedp.ConsoleMessage, error) bool)) {
	for m, err := range msgs {
		if err != nil {
			return
		}
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
			b.mu.Lock()
			b.console = append(b.console, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
			b.mu.Unlock()
		}
	}
}

// dump is what a failing test prints: where the page is, its text and
// its console, so that a broken page says why without a rerun.
func (b *tab) dump() string {
	var page string
	_ = b.within(b.ctx, 5*time.Second, func(ctx context.Context) error {
		var err error
		page, err = chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText : "(no body)")`))
		return err
	})
	if len(page) > 4000 {
		page = page[:4000] + "\n…"
	}
	b.mu.Lock()
	console := strings.Join(b.console, "\n  ")
	b.mu.Unlock()
	if console == "" {
		console = "(nothing)"
	}
	return fmt.Sprintf("--- page:\n%s\n--- console errors and warnings:\n  %s", page, console)
}

// do runs the actions within d, failing t with the page's state.
func (b *tab) do(t *testing.T, what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := b.within(b.ctx, d, func(ctx context.Context) error { return chromedp.Do(ctx, actions...) }); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.dump())
	}
}

// eval evaluates a JavaScript expression and decodes its value into v.
func (b *tab) eval(t *testing.T, expr string, v any) {
	t.Helper()
	raw, err := b.evalRaw(b.ctx, expr, 30*time.Second)
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	if err != nil {
		t.Fatalf("evaluate %s: %v\n%s", expr, err, b.dump())
	}
}

func (b *tab) evalRaw(ctx context.Context, expr string, d time.Duration) (json.RawMessage, error) {
	var raw json.RawMessage
	err := b.within(ctx, d, func(ctx context.Context) error {
		var err error
		raw, err = chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
		return err
	})
	return raw, err
}

// wait polls the JavaScript expression until it is truthy (an exception
// counts as not yet) and decodes that value into v (nil: dropped); after
// d it fails t with the page's state. The page's Content-Security-Policy
// forbids eval, so chromedp.Poll (new Function in the page) cannot run
// there; DevTools' own evaluation can.
func (b *tab) wait(t *testing.T, what, expr string, d time.Duration, v any) {
	t.Helper()
	guarded := fmt.Sprintf(`(async () => { try { const v = await (%s); return v ? v : null; } catch (e) { return null; } })()`, expr)
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	for {
		raw, err := b.evalRaw(ctx, guarded, 5*time.Second)
		if err == nil && string(raw) != "null" {
			if v != nil {
				if err := json.Unmarshal(raw, v); err != nil {
					t.Fatalf("%s: decode %s: %v", what, raw, err)
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("still false")
			}
			t.Fatalf("%s: not within %v (%v)\n%s", what, d, err, b.dump())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settle waits for two animation frames: the page has laid out and
// painted what the last change rendered.
func (b *tab) settle(t *testing.T) {
	t.Helper()
	var ok bool
	b.eval(t, `new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, &ok)
}

// click clicks, with the mouse, the element the selector names (an
// XPath, from /, as button makes, or else CSS) once it is enabled: a
// button disabled while an action runs takes no click, as for a user.
func (b *tab) click(t *testing.T, sel string) {
	t.Helper()
	b.do(t, "click "+sel, 15*time.Second, clickOn(sel))
}

func clickOn(sel string) chromedp.Action[chromedp.Void] {
	if strings.HasPrefix(sel, "/") {
		return chromedp.Steps(chromedp.WaitEnabled(chromedp.Search(sel)), chromedp.Click(chromedp.Search(sel)))
	}
	return chromedp.Steps(chromedp.WaitEnabled(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// typeInto replaces the text of an input with text, typed key by key.
func (b *tab) typeInto(t *testing.T, sel, text string) {
	t.Helper()
	b.do(t, "type into "+sel, 15*time.Second,
		clickOn(sel),
		chromedp.Evaluate[chromedp.Void](`document.activeElement.select()`),
		typeKeys(text))
}

// typeKeys types s into the focused element as a keyboard does: for each
// key a keyDown that carries its text (the page sees keydown, keypress
// and input) and a keyUp. chromedp.KeyEvent sends the text in a char
// event of its own after the keyDown, which xterm.js takes for a second
// key: every letter reached the shell twice.
func typeKeys(s string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range s {
			var down, up input.DispatchKeyEventParams
			for _, ev := range kb.Encode(r) {
				switch ev.Type {
				case kb.KeyDown:
					down = *ev
				case kb.KeyChar:
					down.Text, down.UnmodifiedText = ev.Text, ev.UnmodifiedText
				case kb.KeyUp:
					up = *ev
				}
			}
			if down.Text == "" {
				down.Type = kb.KeyRawDown
			}
			for _, ev := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, ev); err != nil {
					return fmt.Errorf("key %q: %w", r, err)
				}
			}
		}
		return nil
	})
}

// goTo sets the page's route (the fragment: a route change, not a load).
func (b *tab) goTo(t *testing.T, hash string) {
	t.Helper()
	b.do(t, "go to "+hash, 10*time.Second, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = %q`, hash)))
}

// button is the XPath of a button by its text, under the element the
// XPath scope names ("" for anywhere).
func button(scope, text string) string {
	return fmt.Sprintf(`%s//button[normalize-space()=%q]`, scope, text)
}
