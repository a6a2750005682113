package dashboard_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"roost.dev/roost/testenv"
)

// TestDashboard drives the dashboard in headless Chromium against the
// real stack (testenv: namespace sandboxes, the control plane on SQLite,
// the dashboard at its URL's /), as a user would, on one sandbox: sign
// in, create, type in its terminal, resize, upload, open a port, look at
// every page (screenshots and an accessibility check), pause, resume,
// kill. The steps share the stack and the browser; a step that needs the
// sandbox skips when creating it failed. Under -short only signing in
// runs.
func TestDashboard(t *testing.T) {
	requireDashboard(t)
	chrome := requireChromium(t)
	env := testenv.Start(t)
	s := &suite{env: env, tab: startBrowser(t, chrome)}
	if !testing.Short() {
		s.cli = buildCLI(t)
	}
	t.Run("wrong key is refused", s.wrongKey)
	t.Run("sign in", s.signIn)
	if testing.Short() {
		t.Log("-short: the sandbox steps skip")
		return
	}
	t.Run("create a sandbox from the form", s.create)
	t.Run("terminal echoes", s.terminalEcho)
	t.Run("terminal follows a resize", s.terminalResize)
	t.Run("upload a file", s.upload)
	t.Run("port links reach a server", s.ports)
	t.Run("screenshots", s.screenshots)
	t.Run("accessibility", s.accessibility)
	t.Run("pause resume extend kill", s.lifecycle)
}

// suite is what the steps share.
type suite struct {
	env *testenv.Env
	tab *tab
	cli *cliBuild
	id  string // the sandbox the create step made; "" until then
}

// sandbox is the sandbox under test, or skips t when there is none.
func (s *suite) sandbox(t *testing.T) string {
	t.Helper()
	if s.id == "" {
		t.Skip("no sandbox: creating one from the form failed")
	}
	return s.id
}

func (s *suite) wrongKey(t *testing.T) {
	b := s.tab
	b.do(t, "open the dashboard", 30*time.Second, chromedp.Navigate(s.env.URL+"/"))
	b.wait(t, "the sign-in form", `document.querySelector("#secret")`, 15*time.Second, nil)
	b.typeInto(t, "#secret", "e2b_"+strings.Repeat("0", 40))
	b.click(t, button("", "Sign in"))
	var alert string
	b.wait(t, "an error", `document.querySelector("[role=alert]")?.textContent`, 15*time.Second, &alert)
	if !strings.Contains(alert, "refused") {
		t.Errorf("the error says %q; want it to say the key was refused", alert)
	}
	var still bool
	b.eval(t, `!!document.querySelector("#secret") && sessionStorage.length === 0`, &still)
	if !still {
		t.Errorf("after a wrong key the page left the sign-in form or kept the key\n%s", b.dump())
	}
}

// sandboxesShown is true when the sandboxes page has loaded its list.
const sandboxesShown = `location.hash === "#/sandboxes" &&
	[...document.querySelectorAll("main h2")].some((h) => h.textContent === "Sandboxes") &&
	/\d+ of \d+ sandboxes/.test(document.querySelector("main [aria-live]")?.textContent)`

func (s *suite) signIn(t *testing.T) {
	b := s.tab
	b.wait(t, "the sign-in form", `document.querySelector("#secret")`, 15*time.Second, nil)
	b.typeInto(t, "#secret", s.env.APIKey)
	b.click(t, button("", "Sign in"))
	b.wait(t, "the sandboxes page", sandboxesShown, 15*time.Second, nil)
}

// formField is the XPath of the create form's input or textarea whose
// label starts with label.
func formField(label string) string {
	return fmt.Sprintf(`//label[span[starts-with(normalize-space(), %q)]]/*[self::input or self::textarea]`, label)
}

func (s *suite) create(t *testing.T) {
	b := s.tab
	b.goTo(t, "#/sandboxes")
	b.wait(t, "the sandboxes page", sandboxesShown, 15*time.Second, nil)
	b.click(t, button("", "New sandbox"))
	b.typeInto(t, formField("Template"), "base")
	// Long enough for every step.
	b.typeInto(t, formField("Timeout (seconds)"), "900")
	b.typeInto(t, `//label[span[starts-with(normalize-space(), "Metadata")]]/textarea`, "made-by=browser-test")
	b.typeInto(t, formField("Environment variables"), "GREETING=hello-env")
	b.click(t, button("", "Create"))
	var hash string
	b.wait(t, "the new sandbox's page", `/^#\/sandbox\/[^/]+/.test(location.hash) && location.hash`, 60*time.Second, &hash)
	m := regexp.MustCompile(`^#/sandbox/([^/]+)(/terminal)?$`).FindStringSubmatch(hash)
	if m == nil {
		t.Fatalf("after create the page is %s; want #/sandbox/{id}/terminal", hash)
	}
	s.id = m[1]

	var sb struct {
		Metadata map[string]string `json:"metadata"`
		State    string            `json:"state"`
	}
	if code := s.api(t, "GET", "/sandboxes/"+s.id, nil, &sb); code != http.StatusOK || sb.State != "running" || sb.Metadata["made-by"] != "browser-test" {
		t.Errorf("GET /sandboxes/%s: %d, %+v; want a running sandbox with the form's metadata", s.id, code, sb)
	}
	if out := s.exec(t, s.id, `printf %s "$GREETING"`); out != "hello-env" {
		t.Errorf("the form's environment variable: $GREETING is %q, want hello-env", out)
	}
}

// terminalLines reads the terminal's screen, one string a row (xterm's
// DOM renderer writes each row as a div, spaces as no-break spaces).
const terminalLines = `[...document.querySelectorAll("#terminal .xterm-rows > div")].map((d) => d.textContent.replace(/\u00a0/g, " ").trim())`

// openTerminal shows the sandbox's terminal and waits for its prompt.
func (s *suite) openTerminal(t *testing.T, id string) {
	t.Helper()
	b := s.tab
	b.goTo(t, "#/sandbox/"+id+"/terminal")
	b.wait(t, "the shell's prompt", terminalLines+`.some((l) => /[$#]$/.test(l))`, 30*time.Second, nil)
	b.click(t, "#terminal")
}

// typeLine types a command into the focused terminal and waits for a
// row of its output that matches re (a JavaScript regular expression;
// its first group is returned).
func (s *suite) typeLine(t *testing.T, command, re string) string {
	t.Helper()
	b := s.tab
	b.do(t, "type "+command, 15*time.Second, typeKeys(command+"\r"))
	var group string
	b.wait(t, "output matching "+re, fmt.Sprintf(`(() => { const re = new RegExp(%q); for (const l of %s) { const m = re.exec(l); if (m) return m[1] ?? m[0]; } return null; })()`, re, terminalLines),
		20*time.Second, &group)
	return group
}

func (s *suite) terminalEcho(t *testing.T) {
	id := s.sandbox(t)
	s.openTerminal(t, id)
	// The output's row, which only the shell writes, and the row of the
	// typed command, which only the PTY's echo of the keys writes.
	s.typeLine(t, "echo hello-from-browser", `^hello-from-browser$`)
	s.typeLine(t, "echo $((6*7))", `^42$`)
	var lines []string
	s.tab.eval(t, terminalLines, &lines)
	if !strings.Contains(strings.Join(lines, "\n"), "echo hello-from-browser") {
		t.Errorf("the typed command is not on the screen:\n%s", strings.Join(lines, "\n"))
	}
}

func (s *suite) terminalResize(t *testing.T) {
	id := s.sandbox(t)
	b := s.tab
	s.openTerminal(t, id)
	cols := func(marker string) int {
		n, err := strconv.Atoi(s.typeLine(t, "echo "+marker+"=$(tput cols)", "^"+marker+`=(\d+)$`))
		if err != nil {
			t.Fatalf("tput cols: %v", err)
		}
		return n
	}
	wide := cols("wide")
	b.do(t, "narrow the window", 10*time.Second, chromedp.EmulateViewport(desktopW*5/8, desktopH))
	defer b.do(t, "restore the window", 10*time.Second, chromedp.EmulateViewport(desktopW, desktopH))
	// The new size travels page → WebSocket → PTY while the next command
	// is typed: ask again until the shell sees it.
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; ; i++ {
		narrow := cols(fmt.Sprintf("narrow%d", i))
		if narrow < wide {
			t.Logf("tput cols: %d at %d px, %d at %d px", wide, desktopW, narrow, desktopW*5/8)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tput cols stayed %d (was %d) after the window narrowed\n%s", narrow, wide, b.dump())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (s *suite) upload(t *testing.T) {
	id := s.sandbox(t)
	b := s.tab
	b.goTo(t, "#/sandbox/"+id+"/terminal")
	b.click(t, `.tabs a[href$="/files"]`)
	var dir string
	b.wait(t, "the files tab", `document.querySelector("#files-list tr[data-name]") && document.querySelector("#files-path")?.value`, 20*time.Second, &dir)

	const name = "from-the-browser.txt"
	want := "uploaded by the browser test " + randomHex(8) + "\n"
	local := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(local, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	b.do(t, "choose the file", 10*time.Second, chromedp.SetUploadFiles(chromedp.CSS("#files-upload"), []string{local}))
	b.wait(t, "the uploaded file listed", fmt.Sprintf(`document.querySelector('#files-list tr[data-name=%q]')`, name), 30*time.Second, nil)

	got := s.roost(t, "cp", id+":"+path.Join(dir, name), "-")
	if got != want {
		t.Errorf("roost cp %s:%s: %q, want %q", id, path.Join(dir, name), got, want)
	}
}

func (s *suite) ports(t *testing.T) {
	id := s.sandbox(t)
	b := s.tab
	s.exec(t, id, `cd /tmp && echo hi > served-by-python.txt && (setsid nohup python3 -m http.server 8000 >/dev/null 2>&1 &)`)
	b.goTo(t, "#/sandbox/"+id+"/terminal")
	b.click(t, `.tabs a[href$="/ports"]`)
	var links struct{ Host, Path string }
	b.wait(t, "the port's links", `(() => {
		const host = document.querySelector('#ports-list a[data-port="8000"]')?.href;
		const path = document.querySelector('#ports-list a[data-port-path="8000"]')?.href;
		return host && path && { host, path };
	})()`, 60*time.Second, &links)
	if !strings.HasPrefix(links.Host, "http://8000-"+id+".localhost:") {
		t.Errorf("the port's link is %s; want http://8000-%s.localhost:PORT/", links.Host, id)
	}
	if !strings.HasSuffix(links.Path, "/proxy/"+id+"/8000/") {
		t.Errorf("the port's path link is %s; want …/proxy/%s/8000/", links.Path, id)
	}
	other := b.newTab(t)
	for _, u := range []string{links.Host, links.Path} {
		err := other.within(other.ctx, 30*time.Second, func(ctx context.Context) error { return chromedp.Do(ctx, chromedp.Navigate(u)) })
		if err != nil {
			t.Fatalf("open %s in the browser: %v; Go's client: %s\n%s", u, err, fetchLoopback(u), other.dump())
		}
		other.wait(t, "python's directory listing at "+u,
			`document.body.innerText.includes("Directory listing") && document.body.innerText.includes("served-by-python.txt")`, 15*time.Second, nil)
	}
}

func (s *suite) lifecycle(t *testing.T) {
	id := s.sandbox(t)
	b := s.tab
	row := fmt.Sprintf(`//tr[@data-sandbox=%q]`, id)
	rowState := func(want string) string {
		return fmt.Sprintf(`document.querySelector('tr[data-sandbox=%q] .state')?.textContent.trim() === %q`, id, want)
	}
	pageState := func(want string) string {
		return fmt.Sprintf(`document.querySelector("main .state")?.textContent.trim() === %q`, want)
	}
	b.goTo(t, "#/sandboxes")
	b.wait(t, "the sandbox's row", rowState("running"), 20*time.Second, nil)
	b.click(t, button(row, "Pause"))
	b.wait(t, "the row paused", rowState("paused"), 60*time.Second, nil)

	// The sandbox's own page has the same buttons and badge.
	b.goTo(t, "#/sandbox/"+id+"/events")
	b.wait(t, "the page's paused badge", pageState("paused"), 20*time.Second, nil)
	b.click(t, button("//main", "Resume"))
	b.wait(t, "the page's running badge", pageState("running"), 60*time.Second, nil)
	before := s.endAt(t, id)
	b.click(t, button("//main", "+5 min"))
	s.waitExtended(t, "the page's", id, before)

	b.goTo(t, "#/sandboxes")
	b.wait(t, "the row running", rowState("running"), 20*time.Second, nil)
	before = s.endAt(t, id)
	b.click(t, button(row, "+5 min"))
	s.waitExtended(t, "the table's", id, before)

	b.click(t, button(row, "Kill"))
	b.click(t, button(row, "Really kill?"))
	b.wait(t, "the row gone", fmt.Sprintf(`!document.querySelector('tr[data-sandbox=%q]')`, id), 30*time.Second, nil)
	if code := s.api(t, "GET", "/sandboxes/"+id, nil, nil); code != http.StatusNotFound {
		t.Errorf("GET /sandboxes/%s after kill: %d, want 404", id, code)
	}
	b.goTo(t, "#/sandbox/"+id+"/terminal")
	b.wait(t, "its page saying it is gone", `document.querySelector("[role=alert]")?.textContent.includes("no longer exists")`, 20*time.Second, nil)
	s.id = ""
}

// endAt is when the API says the sandbox ends.
func (s *suite) endAt(t *testing.T, id string) time.Time {
	t.Helper()
	var sb struct {
		EndAt time.Time `json:"endAt"`
	}
	if code := s.api(t, "GET", "/sandboxes/"+id, nil, &sb); code != http.StatusOK {
		t.Fatalf("GET /sandboxes/%s: %d", id, code)
	}
	return sb.EndAt
}

// waitExtended waits until the sandbox's end moved from before by about
// five minutes, later: "+5 min" (of the page or the table, which says)
// adds to the time left.
func (s *suite) waitExtended(t *testing.T, which, id string, before time.Time) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		end := s.endAt(t, id)
		moved := end.Sub(before)
		if moved > 4*time.Minute && moved < 6*time.Minute {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s +5 min the sandbox's end moved by %v (now %v from now); want about +5m\n%s", which, moved.Round(time.Second), time.Until(end).Round(time.Second), s.tab.dump())
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// api calls the stack's REST API with the team's key and decodes a 2xx
// answer into out (nil: dropped); it returns the status.
func (s *suite) api(t *testing.T, method, route string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.env.URL+route, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", s.env.APIKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, route, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, route, err, raw)
		}
	}
	return res.StatusCode
}

// exec runs a shell command in the sandbox through the API and returns
// its standard output.
func (s *suite) exec(t *testing.T, id, cmd string) string {
	t.Helper()
	var res struct {
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
		ExitCode int    `json:"exitCode"`
	}
	if code := s.api(t, "POST", "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": cmd}, &res); code != http.StatusOK || res.ExitCode != 0 {
		t.Fatalf("exec %q: %d, exit %d: %s", cmd, code, res.ExitCode, res.Stderr)
	}
	return res.Stdout
}

// cliBuild is the roost CLI, built in the background while the stack
// and the browser start.
type cliBuild struct {
	done chan struct{}
	path string
	err  error
}

func buildCLI(t *testing.T) *cliBuild {
	c := &cliBuild{done: make(chan struct{}), path: filepath.Join(t.TempDir(), "roost")}
	go func() {
		defer close(c.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			c.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", c.path, "./cmd/roost")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			c.err = fmt.Errorf("go build ./cmd/roost: %w: %s", err, out)
		}
	}()
	t.Cleanup(func() { <-c.done })
	return c
}

// roost runs the roost CLI against the stack and returns its output.
func (s *suite) roost(t *testing.T, args ...string) string {
	t.Helper()
	<-s.cli.done
	if s.cli.err != nil {
		t.Fatal(s.cli.err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.cli.path, args...)
	cmd.Env = append(os.Environ(), "ROOST_API_URL="+s.env.URL, "ROOST_API_KEY="+s.env.APIKey)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("roost %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// fetchLoopback says what GET url answers, *.localhost dialled at
// 127.0.0.1: whether a page the browser could not open is the server's
// fault or the browser's.
func fetchLoopback(url string) string {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}},
	}
	res, err := client.Get(url)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 300))
	return fmt.Sprintf("%s: %q", res.Status, body)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
