package interpreter

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// event is one line of /execute's answer, as @e2b/code-interpreter reads
// it: "type" is stdout, stderr, result, error, number_of_executions, or
// keepalive (which it skips).
type event map[string]any

const (
	// keepaliveEvery is how long a run may print nothing before the server
	// writes a keepalive line (the package waits at most its timeout for
	// the whole answer, but a proxy may close an idle connection).
	keepaliveEvery = 5 * time.Second
	// interruptGrace is how long an interrupted run may take to stop
	// before its kernel is restarted.
	interruptGrace = 10 * time.Second
)

// errStuck is a run that did not stop when interrupted.
var errStuck = errors.New("the kernel did not stop when interrupted")

// run executes code in k and gives each line of its output to emit, until
// the kernel is idle again. When ctx ends (the client went away or its
// time ran out) the kernel is interrupted, and run waits for it to be
// idle for interruptGrace. A silent run (the server's own set-up code)
// counts no execution and emits nothing. It fails with errKernelDied when
// the kernel's process ends, errStuck when an interrupt did not stop it.
func (k *kernel) run(ctx context.Context, code string, silent bool, emit func(event)) error {
	ch, done, err := k.send("execute_request", map[string]any{
		"code": code, "silent": silent, "store_history": !silent,
		// Runs of a context are serialised: none is queued behind this one
		// for an error to abort (ipykernel aborts the requests that arrive
		// just after an error with stop_on_error, the next run included).
		"user_expressions": map[string]any{}, "allow_stdin": false, "stop_on_error": false,
	})
	if err != nil {
		return err
	}
	defer done()
	tick := time.NewTicker(keepaliveEvery)
	defer tick.Stop()
	cancelled := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case m := <-ch:
			if m.Header.MsgType == "status" && state(m) == "idle" {
				return nil
			}
			if e, ok := eventOf(m); ok && !silent {
				emit(e)
				tick.Reset(keepaliveEvery)
			}
		case <-tick.C:
			if !silent {
				emit(event{"type": "keepalive"})
			}
		case <-cancelled:
			k.interrupt()
			cancelled, grace = nil, time.After(interruptGrace)
		case <-grace:
			return errStuck
		case <-k.exited:
			return errKernelDied
		}
	}
}

func state(m message) string {
	var c struct {
		ExecutionState string `json:"execution_state"`
	}
	_ = json.Unmarshal(m.Content, &c)
	return c.ExecutionState
}

// eventOf maps a kernel's iopub message to a line of the answer.
func eventOf(m message) (event, bool) {
	var c struct {
		Name           string          `json:"name"`
		Text           string          `json:"text"`
		ExecutionCount *int            `json:"execution_count"`
		Data           map[string]any  `json:"data"`
		EName          string          `json:"ename"`
		EValue         string          `json:"evalue"`
		Traceback      []string        `json:"traceback"`
		Metadata       json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(m.Content, &c); err != nil {
		return nil, false
	}
	switch m.Header.MsgType {
	case "execute_input":
		if c.ExecutionCount == nil {
			return nil, false
		}
		return event{"type": "number_of_executions", "execution_count": *c.ExecutionCount}, true
	case "stream":
		if c.Name != "stdout" && c.Name != "stderr" {
			return nil, false
		}
		return event{"type": c.Name, "text": c.Text, "timestamp": m.Header.Date}, true
	case "display_data", "execute_result":
		e := resultOf(c.Data)
		e["is_main_result"] = m.Header.MsgType == "execute_result"
		return e, true
	case "error":
		return event{"type": "error", "name": c.EName, "value": c.EValue, "traceback": strings.Join(c.Traceback, "\n")}, true
	}
	return nil, false
}

// resultFields are the result fields of the MIME types the package
// knows; a result's other types go, by MIME type, in its "extra".
var resultFields = map[string]string{
	"text/plain": "text", "text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg",
	"image/png": "png", "image/jpeg": "jpeg", "application/pdf": "pdf", "text/latex": "latex",
	"application/json": "json", "application/javascript": "javascript",
	"e2b/data": "data", "e2b/chart": "chart",
}

// resultOf is the result line of a display's data bundle. A text/plain
// of a string comes quoted from the kernel ('hello'): E2B gives it
// without the quotes, and so does this.
func resultOf(data map[string]any) event {
	e := event{"type": "result"}
	extra := map[string]any{}
	for mime, v := range data {
		field, ok := resultFields[mime]
		if !ok {
			extra[mime] = v
			continue
		}
		if s, ok := v.(string); ok && field == "text" {
			v = unquote(s)
		}
		e[field] = v
	}
	e["extra"] = extra
	return e
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '\'' && s[len(s)-1] == '\'' || s[0] == '"' && s[len(s)-1] == '"') {
		return s[1 : len(s)-1]
	}
	return s
}
