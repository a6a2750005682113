package agent_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
)

// logsOf reads a sandbox's log through the agent's RPC.
func logsOf(t *testing.T, a *agentProc, req *hostagentv1.GetSandboxLogsRequest) []*hostagentv1.LogEntry {
	t.Helper()
	resp, err := a.client.GetSandboxLogs(ctxT(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("logs %v: %v", req, err)
	}
	return resp.Msg.GetEntries()
}

// waitLog polls the sandbox's log until an entry's message contains
// text, and returns the first such entry.
func waitLog(t *testing.T, a *agentProc, id, text string) *hostagentv1.LogEntry {
	t.Helper()
	return waitLogs(t, a, id, text, 1)[0]
}

// waitLogs polls the sandbox's log until n entries' messages contain
// text, and returns them.
func waitLogs(t *testing.T, a *agentProc, id, text string, n int) []*hostagentv1.LogEntry {
	t.Helper()
	for range 400 {
		if got := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Search: text}); len(got) >= n {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("fewer than %d log entries with %q in %v", n, text, logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id}))
	return nil
}

// startAsRoot starts a bash script in the sandbox as root and returns
// without waiting for it.
func startAsRoot(ctx context.Context, envd, token, script string) error {
	c := processconnect.NewProcessClient(http.DefaultClient, "http://"+envd)
	req := connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}})
	req.Header().Set("X-Access-Token", token)
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("root:")))
	stream, err := c.Start(ctx, req)
	if err != nil {
		return err
	}
	for stream.Receive() {
	}
	return stream.Err()
}

func TestAgentLogs(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	id, token := testID("logs-"), "envd-token-"+testID("")
	created, err := a.client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		SandboxId: id, Template: "base", TimeoutSeconds: 600, EnvdAccessToken: token}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	envd := created.Msg.GetSandbox().GetEnvdAddress()
	started := created.Msg.GetSandbox().GetStartedAt().AsTime()

	// envd's first line, as JSON: its time, level, message and fields.
	listening := waitLog(t, a, id, "envd listening")
	if listening.GetLevel() != hostagentv1.LogLevel_LOG_LEVEL_INFO || listening.GetMessage() != "envd listening" ||
		!strings.HasSuffix(listening.GetFields()["addr"], ":49983") || listening.GetFields()["forward_ports"] != "true" ||
		listening.GetTime().AsTime().Before(started.Add(-time.Second)) {
		t.Fatalf("envd's start: %v", listening)
	}
	// A server on loopback makes envd's port forwarder log.
	mustExec(t, envd, token, "(nohup python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 &)")
	forward := waitLog(t, a, id, "port forward started")
	if forward.GetFields()["target"] == "" || !strings.Contains(forward.GetFields()["target"], "8123") {
		t.Fatalf("port forward entry: %v", forward)
	}

	t.Run("filters", func(t *testing.T) {
		all := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id})
		if len(all) < 2 || !ordered(all, 1) {
			t.Fatalf("forward: %v", all)
		}
		back := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Direction: hostagentv1.LogDirection_LOG_DIRECTION_BACKWARD})
		if !slices.EqualFunc(back, reversed(all), func(x, y *hostagentv1.LogEntry) bool { return proto.Equal(x, y) }) {
			t.Fatalf("backward is not forward reversed:\n%v\n%v", back, all)
		}
		if one := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Limit: proto.Int32(1)}); len(one) != 1 || !proto.Equal(one[0], all[0]) {
			t.Errorf("limit 1: %v", one)
		}
		if none := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Limit: proto.Int32(0)}); len(none) != 0 {
			t.Errorf("limit 0: %v", none)
		}
		if warn := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, MinLevel: hostagentv1.LogLevel_LOG_LEVEL_WARN}); slices.ContainsFunc(warn, below(hostagentv1.LogLevel_LOG_LEVEL_WARN)) {
			t.Errorf("level warn: %v", warn)
		}
		cursor := forward.GetTime()
		from := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Cursor: cursor})
		if len(from) == 0 || from[0].GetTime().AsTime().UnixMilli() < cursor.AsTime().UnixMilli() || !slices.ContainsFunc(from, sameAs(forward)) {
			t.Errorf("from the cursor %v: %v", cursor.AsTime(), from)
		}
		before := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Cursor: listening.GetTime(),
			Direction: hostagentv1.LogDirection_LOG_DIRECTION_BACKWARD, Search: "envd listening"})
		if len(before) != 1 || !proto.Equal(before[0], listening) {
			t.Errorf("back from envd's start: %v", before)
		}
		if none := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id, Search: "ENVD LISTENING"}); len(none) != 0 {
			t.Errorf("search is case-sensitive: %v", none)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, req := range []*hostagentv1.GetSandboxLogsRequest{
			{SandboxId: id, Limit: proto.Int32(-1)},
			{SandboxId: id, Limit: proto.Int32(10001)},
			{SandboxId: id, Direction: 7},
			{SandboxId: id, MinLevel: 9},
			{SandboxId: id, Search: strings.Repeat("s", 1025)},
			{SandboxId: id, Cursor: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}},
		} {
			_, err := a.client.GetSandboxLogs(ctx, connect.NewRequest(req))
			wantCode(t, req.String(), err, connect.CodeInvalidArgument)
		}
		_, err := a.client.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{SandboxId: "no-such-sandbox"}))
		wantCode(t, "unknown sandbox", err, connect.CodeNotFound)
	})

	t.Run("paused", func(t *testing.T) {
		if _, err := a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id})); err != nil {
			t.Fatal(err)
		}
		waitLog(t, a, id, "port forward started")
		if _, err := a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id})); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("init's plain lines", func(t *testing.T) {
		// envd dies; the init says so in plain text and starts another.
		if err := startAsRoot(ctx, envd, token, "(setsid nohup bash -c 'sleep 0.5; pkill -x envd' >/dev/null 2>&1 &)"); err != nil {
			t.Fatal(err)
		}
		exited := waitLog(t, a, id, "roost init: envd exited")
		all := logsOf(t, a, &hostagentv1.GetSandboxLogsRequest{SandboxId: id})
		i := slices.IndexFunc(all, sameAs(exited))
		if exited.GetLevel() != hostagentv1.LogLevel_LOG_LEVEL_INFO || len(exited.GetFields()) != 0 || i < 1 ||
			!exited.GetTime().AsTime().Equal(all[i-1].GetTime().AsTime()) {
			t.Fatalf("the init's line %v, after %v", exited, all[max(i-1, 0)])
		}
		// The next envd's start follows it.
		if again := waitLogs(t, a, id, "envd listening", 2)[1]; again.GetTime().AsTime().Before(exited.GetTime().AsTime()) {
			t.Errorf("envd's second start %v, before the init's line %v", again, exited)
		}
	})

	a.stop()
	b := h.start()
	t.Run("after restart", func(t *testing.T) {
		waitLog(t, b, id, "port forward started")
	})

	t.Run("destroyed", func(t *testing.T) {
		if _, err := b.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id})); err != nil {
			t.Fatal(err)
		}
		_, err := b.client.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{SandboxId: id}))
		wantCode(t, "logs of a destroyed sandbox", err, connect.CodeNotFound)
	})
}

// ordered says whether es are in time order: dir 1 oldest first, -1
// newest first.
func ordered(es []*hostagentv1.LogEntry, dir int) bool {
	return slices.IsSortedFunc(es, func(a, b *hostagentv1.LogEntry) int {
		return dir * a.GetTime().AsTime().Compare(b.GetTime().AsTime())
	})
}

func reversed(es []*hostagentv1.LogEntry) []*hostagentv1.LogEntry {
	out := slices.Clone(es)
	slices.Reverse(out)
	return out
}

func below(l hostagentv1.LogLevel) func(*hostagentv1.LogEntry) bool {
	return func(e *hostagentv1.LogEntry) bool { return e.GetLevel() < l }
}

func sameAs(e *hostagentv1.LogEntry) func(*hostagentv1.LogEntry) bool {
	return func(x *hostagentv1.LogEntry) bool { return proto.Equal(x, e) }
}
