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
	// createPlain is how often a line is printed when nothing changes,
	// off a terminal.
	createPlain = 15 * time.Second
)

// baseTemplate is the template each host builds itself.
const baseTemplate = "base"

// createProgress shows, on w, what a sandbox create of template tpl waits
// for while it is pending: after createQuiet, the template's build or
// pull status from the template list (GET /v1/templates), with the time
// waited. On a terminal one line is rewritten in place; otherwise a line
// is printed when the status changes, and every createPlain. stop ends it
// and clears the line.
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
		last, printed := "", time.Time{}
		for {
			status := templateStatus(ctx, c, tpl)
			waited := time.Since(start).Round(time.Second)
			switch {
			case tty:
				fmt.Fprintf(w, "\r\033[K%s (%s)", status, waited)
			case status != last || time.Since(printed) >= createPlain:
				fmt.Fprintf(w, "%s (%s)\n", status, waited)
				printed = time.Now()
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
	waiting := "creating sandbox: waiting for template " + tpl
	if tpl == baseTemplate {
		// A host's base is listed once built.
		waiting = "creating sandbox: waiting for the host to build the base template (1-2 minutes, once)"
	}
	ts, err := c.Templates(ctx)
	if err != nil {
		return waiting
	}
	i := slices.IndexFunc(ts, func(t client.TemplateInfo) bool { return templateMatches(t, tpl) })
	if i < 0 {
		return waiting
	}
	t := ts[i]
	msg := "creating sandbox: template " + tpl
	switch {
	case t.Progress != "":
		msg += ": " + t.Progress
	case t.Status != "" && t.Status != client.BuildReady:
		msg += ": " + t.Status
	default:
		msg += " is built; the host may be pulling it"
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
