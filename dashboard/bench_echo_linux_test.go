package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/testenv"
)

// BenchmarkDashboardEcho measures keystroke echo in the dashboard's
// terminal: b.N keys typed in Chromium (trusted key events from the
// DevTools protocol) into `cat` on the sandbox page's terminal, each
// timed from its keydown to the glyph in xterm's buffer and to the glyph
// drawn in xterm's rows; beside it, the same keys typed by a Go
// WebSocket client into `cat` on a terminal of its own in the same
// sandbox. A second Chromium runs without the feature that holds a
// page's tasks after an input event until the next frame
// (DeferRendererTasksAfterInput), which shows what that costs. Each key
// is typed in the three in turn. The stack is testenv's: the control
// plane and a host agent in process, a real namespace sandbox.
func BenchmarkDashboardEcho(b *testing.B) {
	env := testenv.Start(b)
	id := benchSandbox(b, env)
	// Killed before testenv stops, after the terminals are gone: a
	// terminal whose input is stuck would hold the stack's close.
	b.Cleanup(func() { benchKill(env, id) })
	browser := openBenchBrowserTerm(b, newBenchTab(b, false), env, id)
	undeferred := openBenchBrowserTerm(b, newBenchTab(b, false, "DeferRendererTasksAfterInput"), env, id)
	goterm := openBenchGoTerm(b, env, id)

	var buffer, drawn, undeferredBuffer, inGo []time.Duration
	// line is the keys typed before the line is cleared (^U, untimed):
	// the line of `cat` stays within the terminal's width.
	const line = 60
	i := 0
	for b.Loop() {
		if i > 0 && i%line == 0 {
			browser.clearLine(b)
			undeferred.clearLine(b)
			goterm.clearLine(b)
		}
		c := byte('a' + i%26)
		buf, screen := browser.echo(b, c)
		buffer, drawn = append(buffer, buf), append(drawn, screen)
		buf, _ = undeferred.echo(b, c)
		undeferredBuffer = append(undeferredBuffer, buf)
		inGo = append(inGo, goterm.echo(b, c))
		i++
	}
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"browser", buffer}, {"browser-drawn", drawn}, {"browser-undeferred", undeferredBuffer}, {"go", inGo}} {
		b.ReportMetric(benchPct(r.ds, 50), r.name+"-p50-ms")
		b.ReportMetric(benchPct(r.ds, 99), r.name+"-p99-ms")
		if err := samples.Durations("dashboard-echo-"+r.name, r.ds); err != nil {
			b.Error(err)
		}
	}
}

func benchSandbox(b *testing.B, env *testenv.Env) string {
	b.Helper()
	body := strings.NewReader(`{"templateID":"base","timeout":3600}`)
	req, _ := http.NewRequest("POST", env.URL+"/v2/sandboxes", body)
	req.Header.Set("X-API-Key", env.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var sb struct{ SandboxID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &sb) != nil {
		b.Fatalf("create: %s: %s", resp.Status, raw)
	}
	return sb.SandboxID
}

func benchKill(env *testenv.Env, id string) {
	req, _ := http.NewRequest("DELETE", env.URL+"/sandboxes/"+id, nil)
	req.Header.Set("X-API-Key", env.APIKey)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// benchBrowserTerm is the sandbox page's terminal in a tab, with echoProbe
// installed.
type benchBrowserTerm struct {
	tab  *benchTab
	line []byte // typed since the line was last cleared
}

// openBenchBrowserTerm signs in, opens the sandbox's terminal page and
// runs `cat` on a cleared screen there.
func openBenchBrowserTerm(b *testing.B, tab *benchTab, env *testenv.Env, id string) *benchBrowserTerm {
	b.Helper()
	tab.navigate(env.URL + "/")
	cred, _ := json.Marshal(map[string]string{"kind": "key", "secret": env.APIKey})
	tab.eval(10*time.Second, fmt.Sprintf(`sessionStorage.setItem('roost.credential', %q)`, cred), nil)
	tab.navigate(env.URL + "/?terminal#/sandbox/" + id + "/terminal")
	tab.eval(time.Minute, `new Promise((resolve, reject) => {
  const t0 = performance.now();
  const look = () => {
    const rows = document.querySelector('#terminal .xterm-rows');
    if (rows && rows.textContent.trim() !== '') return resolve(true);
    if (performance.now() - t0 > 50000) return reject(new Error('no prompt in the terminal: ' + document.body.innerText.slice(0, 300)));
    setTimeout(look, 20);
  };
  look();
})`, nil)
	tab.eval(10*time.Second, echoProbe, nil)
	tab.eval(10*time.Second, `document.querySelector('#terminal .xterm-helper-textarea').focus()`, nil)
	// The screen cleared, then cat: what is on it from now on is what
	// was typed.
	tab.insertText(`printf '\033[H\033[2J'; exec cat`)
	tab.press(benchEnter)
	t := &benchBrowserTerm{tab: tab}
	t.awaitScreen(b, "")
	return t
}

// echo types c and returns the times from its keydown to its glyph in
// xterm's buffer and drawn on the screen, as the page measured them.
func (t *benchBrowserTerm) echo(b *testing.B, c byte) (buffer, drawn time.Duration) {
	b.Helper()
	t.line = append(t.line, c)
	want, _ := json.Marshal(string(t.line))
	t.tab.eval(10*time.Second, fmt.Sprintf(`__roostEcho.arm(%s, false)`, want), nil)
	t.tab.press(benchLetter(c))
	var got struct{ Buffer, Drawn float64 }
	t.tab.eval(15*time.Second, `__roostEcho.done(10000)`, &got)
	if got.Buffer < 0 {
		b.Fatalf("no WebSocket message after the key %q was sent", c)
	}
	return benchMs(got.Buffer), benchMs(got.Drawn)
}

// clearLine types ^U, which cat's terminal erases, and waits for the
// empty screen.
func (t *benchBrowserTerm) clearLine(b *testing.B) {
	b.Helper()
	t.line = t.line[:0]
	t.tab.press(benchCtrlU)
	t.awaitScreen(b, "")
}

func (t *benchBrowserTerm) awaitScreen(b *testing.B, s string) {
	b.Helper()
	want, _ := json.Marshal(s)
	t.tab.eval(10*time.Second, fmt.Sprintf(`__roostEcho.arm(%s, true)`, want), nil)
	t.tab.eval(15*time.Second, `__roostEcho.done(10000)`, nil)
}

// echoProbe times keystrokes in the page. arm(text, exact) expects the
// screen (xterm's rows, trimmed) to end with text (or to equal it) and
// starts the clock at the next keydown, in the capture phase, before
// xterm sees it. The glyph is in xterm's buffer when the first WebSocket
// message after the key's frame was sent has been handled: the page's
// handler, first to run, writes it to the terminal, and xterm parses the
// first write after user input at once rather than in a later task; a
// listener added after that handler notes the time. A MutationObserver
// on the rows notes when the screen reads text: the glyph drawn.
// done(ms) resolves with both, in milliseconds from the keydown.
const echoProbe = `(() => {
  const rows = document.querySelector('#terminal .xterm-rows');
  const screen = () => rows.textContent.replace(/\u00a0/g, ' ').trim();
  let want = null, exact = false, armed = false, t0 = 0, got = null, resolve = null;
  let sent = false, parsedAt = -1;
  const watched = new WeakSet();
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (!watched.has(this)) {
      watched.add(this);
      this.addEventListener('message', () => { if (sent) { parsedAt = performance.now(); sent = false; } });
    }
    if (t0 > 0 && parsedAt < 0) sent = true;
    return send.call(this, data);
  };
  addEventListener('keydown', () => { if (armed) { t0 = performance.now(); armed = false; } }, true);
  const check = () => {
    if (want === null) return;
    const s = screen();
    if (exact ? s !== want : !s.endsWith(want)) return;
    got = { drawn: performance.now() - t0, buffer: parsedAt < 0 ? -1 : parsedAt - t0 };
    want = null;
    if (resolve) { resolve(got); resolve = null; }
  };
  new MutationObserver(check).observe(rows, { childList: true, subtree: true, characterData: true });
  window.__roostEcho = {
    arm(text, ex) { want = text; exact = ex; armed = !ex; t0 = ex ? performance.now() : 0; got = null; sent = false; parsedAt = -1; },
    done(ms) {
      check();
      if (want === null) return Promise.resolve(got);
      return new Promise((res, rej) => {
        resolve = res;
        setTimeout(() => rej(new Error('the screen does not read ' + JSON.stringify(want) + ': ' + JSON.stringify(screen()))), ms);
      });
    },
  };
})()`

// benchGoTerm is a Go WebSocket client's terminal (GET
// /v1/sandboxes/{id}/pty) running cat.
type benchGoTerm struct {
	c      *websocket.Conn
	ctx    context.Context
	arrive chan []byte
}

func openBenchGoTerm(b *testing.B, env *testenv.Env, id string) *benchGoTerm {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	url := "ws" + strings.TrimPrefix(env.URL, "http") + "/v1/sandboxes/" + id + "/pty"
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"X-Api-Key": {env.APIKey}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.CloseNow() })
	t := &benchGoTerm{c: c, ctx: ctx, arrive: make(chan []byte, 1024)}
	go func() {
		defer close(t.arrive)
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary && len(msg) > 1 {
				t.arrive <- msg[1:] // after the channel byte
			}
		}
	}()
	t.send(b, "echo ready-$((40+2)); exec cat\r")
	t.await(b, "ready-42")
	t.drain(100 * time.Millisecond)
	return t
}

func (t *benchGoTerm) send(b *testing.B, s string) {
	if err := t.c.Write(t.ctx, websocket.MessageBinary, append([]byte{0}, s...)); err != nil {
		b.Fatal(err)
	}
}

// await reads output until it holds s.
func (t *benchGoTerm) await(b *testing.B, s string) {
	b.Helper()
	var seen []byte
	timer := time.NewTimer(10 * time.Second) // a hang guard, not a measurement
	defer timer.Stop()
	for !bytes.Contains(seen, []byte(s)) {
		select {
		case msg, ok := <-t.arrive:
			if !ok {
				b.Fatalf("terminal closed waiting for %q", s)
			}
			seen = append(seen, msg...)
		case <-timer.C:
			b.Fatalf("no %q within 10 s; output %q", s, seen)
		}
	}
}

func (t *benchGoTerm) drain(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-t.arrive:
		case <-timer.C:
			return
		}
	}
}

// echo types c and returns the time until it came back.
func (t *benchGoTerm) echo(b *testing.B, c byte) time.Duration {
	b.Helper()
	t0 := time.Now()
	t.send(b, string(c))
	t.await(b, string(c))
	return time.Since(t0)
}

// clearLine types ^U and lets its erasing pass.
func (t *benchGoTerm) clearLine(b *testing.B) {
	t.send(b, "\x15")
	t.drain(20 * time.Millisecond)
}
