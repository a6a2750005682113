package interpreter

import (
	"maps"
	"unicode/utf8"
)

// event is one line of /execute's answer, as @e2b/code-interpreter reads
// it: "type" is stdout, stderr, result, error, number_of_executions, or
// keepalive (which it skips).
type event map[string]any

// maxText is the most text a stdout or stderr line holds: a kernel may
// send what a run printed in a moment as one message, however large.
const maxText = 1 << 20

// splitStream is e, a stdout or stderr line of more than maxText, as
// lines of at most maxText, cut between characters; other lines as they
// are.
func splitStream(e event) []event {
	text, _ := e["text"].(string)
	if (e["type"] != "stdout" && e["type"] != "stderr") || len(text) <= maxText {
		return []event{e}
	}
	var out []event
	for len(text) > 0 {
		n := min(maxText, len(text))
		for n < len(text) && !utf8.RuneStart(text[n]) {
			n--
		}
		part := maps.Clone(e)
		part["text"] = text[:n]
		out = append(out, part)
		text = text[n:]
	}
	return out
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
