package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"roost.dev/roost/client"
)

// How a create that takes long shows what it waits for.
const (
	createQuiet = 2 * time.Second // a create faster than this shows nothing
	createPoll  = time.Second
)

// createProgress shows, on w, what a sandbox create of template tpl waits
// for while it is pending: after createQuiet, the template's build or
// pull status from the template list (GET /v1/templates), with the time
// waited. On a terminal one line is rewritten in place; otherwise a line
// is printed when the status changes. stop ends it and clears the line.
func createProgress(ctx context.Context, w io.Writer, c *client.Client, tpl string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	tty := isTerminal(w)
	go func() {
		defer close(done)
		start := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-time.After(createQuiet):
		}
		tick := time.NewTicker(createPoll)
		defer tick.Stop()
		last := ""
		for {
			status := templateStatus(ctx, c, tpl)
			waited := time.Since(start).Round(time.Second)
			switch {
			case tty:
				fmt.Fprintf(w, "\r\033[K%s (%s)", status, waited)
			case status != last:
				fmt.Fprintf(w, "%s (%s)\n", status, waited)
			}
			last = status
			select {
			case <-ctx.Done():
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// templateStatus says what a create of tpl is waiting for, as far as the
// template list tells.
func templateStatus(ctx context.Context, c *client.Client, tpl string) string {
	ctx, cancel := context.WithTimeout(ctx, createPoll)
	defer cancel()
	ts, err := c.Templates(ctx)
	if err != nil {
		return "creating sandbox: waiting for template " + tpl
	}
	i := slices.IndexFunc(ts, func(t client.TemplateInfo) bool { return templateMatches(t, tpl) })
	if i < 0 {
		return "creating sandbox: waiting for template " + tpl
	}
	t := ts[i]
	msg := "creating sandbox: template " + tpl
	switch {
	case t.Progress != "":
		msg += ": " + t.Progress
	case t.Status != "" && t.Status != client.BuildReady:
		msg += ": " + t.Status
	default:
		msg += " is ready, starting the sandbox"
	}
	return msg
}

// templateMatches says whether t is the template a create names: its ID,
// a name, or a name:tag of it.
func templateMatches(t client.TemplateInfo, ref string) bool {
	name, tag, tagged := strings.Cut(ref, ":")
	if ref == t.TemplateID || name == t.Name || slices.Contains(t.Names, ref) || slices.Contains(t.Names, name) {
		return !tagged || len(t.Tags) == 0 || slices.Contains(t.Tags, tag)
	}
	return false
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
