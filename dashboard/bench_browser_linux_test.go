package dashboard_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The dashboard's benchmarks drive headless Chromium (Debian's chromium
// package; $ROOST_CHROMIUM names another) through the DevTools protocol.
// Times are taken in the page with performance.now(), whose origin is
// the navigation's start, so that the protocol's own round trips are
// never part of a measurement.

// benchTab is one tab of a browser the benchmark started.
type benchTab struct {
	b   *testing.B
	ctx context.Context
}

// newBenchTab starts Chromium for b, stopped when b ends, as a user runs
// it but headless: its frames come at 60 Hz. With cold, the page's cache
// is off: every load fetches the page and its assets, as a first visit
// does (which needs the protocol's network events on, a message to the
// benchmark per request; the echo runs without them). disable names
// Chromium features to turn off besides chromedp's defaults.
func newBenchTab(b *testing.B, cold bool, disable ...string) *benchTab {
	b.Helper()
	exe := cmp.Or(os.Getenv("ROOST_CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(exe); err != nil {
		b.Skipf("no browser: %v (Debian's chromium package)", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // Chromium's sandbox refuses to run as root
		chromedp.WindowSize(1280, 900),
	)
	if len(disable) > 0 {
		opts = append(opts, chromedp.Flag("disable-features", strings.Join(append([]string{"Translate", "BlinkGenPropertyTrees"}, disable...), ",")))
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	// The protocol's errors go to stderr: they may come after b ends.
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "chromium: "+format+"\n", args...)
	}))
	b.Cleanup(func() {
		cancel()
		acancel()
	})
	// The first run starts the browser; it must not carry a timeout.
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if cold {
			if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, t, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true}); err != nil {
				return err
			}
		}
		// Key events go to the focused element of a focused page, which a
		// headless window is not unless emulated.
		if _, err := cdp.Call(ctx, t, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: loadProbe})
		return err
	}))
	if err != nil {
		b.Fatalf("start %s: %v", exe, err)
	}
	return &benchTab{b: b, ctx: ctx}
}

// do runs actions with a timeout.
func (tab *benchTab) do(within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	tab.b.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tab.fatalf("%v", err)
	}
}

// fatalf fails b with what the page shows, said at once on stderr too:
// a failed benchmark's log comes only after its cleanup.
func (tab *benchTab) fatalf(format string, args ...any) {
	tab.b.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	shows, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + ': ' + document.body.innerText.slice(0, 500)`))
	if err != nil {
		shows = "(unreadable: " + err.Error() + ")"
	}
	msg := fmt.Sprintf(format, args...) + "; the page shows " + shows
	fmt.Fprintln(os.Stderr, "bench:", msg)
	tab.b.Fatal(msg)
}

// eval evaluates a JavaScript expression in the page, awaiting it when
// it is a promise, and decodes its value into out (nil: ignored).
func (tab *benchTab) eval(within time.Duration, expr string, out any) {
	tab.b.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, within)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tab.fatalf("%s: %v", expr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			tab.fatalf("%s: %s: %v", expr, raw, err)
		}
	}
}

// navigate loads url and waits for its load event.
func (tab *benchTab) navigate(url string) {
	tab.b.Helper()
	tab.do(time.Minute, chromedp.Navigate(url))
}

// key is one key of the US layout as the protocol dispatches it.
type benchKey struct {
	key, code, text string
	vk              int64
	ctrl            bool
}

func benchLetter(c byte) benchKey {
	return benchKey{key: string(c), code: "Key" + string(c-'a'+'A'), text: string(c), vk: int64(c - 'a' + 'A')}
}

var (
	benchEnter = benchKey{key: "Enter", code: "Enter", text: "\r", vk: 13}
	benchCtrlU = benchKey{key: "u", code: "KeyU", vk: 'U', ctrl: true}
)

// press dispatches k's keydown and keyup to the focused element, as a
// keyboard does: trusted events, through the browser's input pipeline.
func (tab *benchTab) press(k benchKey) {
	tab.b.Helper()
	var mods int64
	if k.ctrl {
		mods = 2
	}
	tab.do(10*time.Second, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Modifiers: mods, Key: k.key, Code: k.code,
			Text: k.text, UnmodifiedText: k.text, WindowsVirtualKeyCode: k.vk, NativeVirtualKeyCode: k.vk}
		if k.text == "" {
			down.Type = input.DispatchKeyEventTypeRawKeyDown
		}
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, down); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyUp,
			Modifiers: mods, Key: k.key, Code: k.code, WindowsVirtualKeyCode: k.vk, NativeVirtualKeyCode: k.vk})
		return err
	}))
}

// insertText types s as an input method would: one input event.
func (tab *benchTab) insertText(s string) {
	tab.b.Helper()
	tab.do(10*time.Second, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: s})
		return err
	}))
}

// loadProbe runs in every document before the dashboard's script. It
// marks, in performance.now() milliseconds from the navigation's start:
//
//   - signin: the sign-in form is in the document, its button enabled
//     (Preact attaches the handlers as it inserts the elements);
//   - rows: the first rows of the sandboxes table are in the document
//     (the table draws the first page of the listing while the others
//     load);
//   - tableN: the sandboxes page's status line reads "N of N sandboxes"
//     and rows of the table are in the document;
//
// each one frame later: after the next animation frame and a task after
// it, so the change has been drawn and the main thread is free for
// input ("…DOM" keeps the moment of insertion). __roostBench.wait(name)
// resolves with the mark.
const loadProbe = `(() => {
  const marks = {};
  const waiters = {};
  const set = (name, t) => {
    if (marks[name] !== undefined) return;
    marks[name] = t;
    for (const w of waiters[name] || []) w(t);
    delete waiters[name];
  };
  const later = (name) => requestAnimationFrame(() => setTimeout(() => set(name, performance.now()), 0));
  const look = () => {
    if (marks.signinDOM === undefined) {
      const s = document.getElementById('secret');
      const btn = s && s.form && s.form.querySelector('button[type=submit]');
      if (btn && !btn.disabled) { set('signinDOM', performance.now()); later('signin'); }
    }
    if (marks.rowsDOM === undefined && document.querySelector('tr[data-sandbox]')) { set('rowsDOM', performance.now()); later('rows'); }
    const status = document.querySelector('p[aria-live]');
    const m = status && /^(\d+) of (\d+) sandboxes$/.exec(status.textContent.trim());
    if (m && m[1] === m[2] && document.querySelector('tr[data-sandbox]')) {
      const name = 'table' + m[2];
      if (marks[name + 'DOM'] === undefined) { set(name + 'DOM', performance.now()); later(name); }
    }
  };
  new MutationObserver(look).observe(document, { childList: true, subtree: true, characterData: true });
  window.__roostBench = {
    marks,
    wait: (name, ms) => marks[name] !== undefined ? Promise.resolve(marks[name]) : new Promise((resolve, reject) => {
      (waiters[name] = waiters[name] || []).push(resolve);
      setTimeout(() => reject(new Error('no mark ' + name + ' within ' + ms + ' ms; page: ' + document.body.innerText.slice(0, 300))), ms);
    }),
  };
})()`

// scrollProbe scrolls the sandboxes table to its end and resolves with
// the milliseconds until its last row (aria-rowindex n+1: the header is
// row 1) is in the document, and the animation frames that took: 1 when
// it was there at the first frame after the scroll.
func scrollProbe(n int) string {
	return fmt.Sprintf(`new Promise((resolve, reject) => {
  const box = document.querySelector('.table-box');
  const sel = 'tr[aria-rowindex="%d"]';
  if (document.querySelector(sel)) { reject(new Error('the last row is in view before the scroll')); return; }
  if (box.scrollHeight <= box.clientHeight) { reject(new Error('the table does not scroll')); return; }
  let ms = -1, frames = 0;
  const t0 = performance.now();
  const mo = new MutationObserver(() => { if (ms < 0 && document.querySelector(sel)) ms = performance.now() - t0; });
  mo.observe(box, { childList: true, subtree: true });
  box.scrollTop = box.scrollHeight;
  const tick = () => {
    frames++;
    if (document.querySelector(sel)) { mo.disconnect(); resolve({ ms: ms < 0 ? performance.now() - t0 : ms, frames }); return; }
    if (frames > 600) { mo.disconnect(); reject(new Error('the last row never rendered')); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})`, n+1)
}
