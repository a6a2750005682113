package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/client"
	"roost.dev/roost/testenv"
)

func TestEndToEnd(t *testing.T) {
	env := testenv.Start(t)
	c := client.New(env.URL, env.APIKey)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	run := strings.ToLower(t.Name())
	sb, err := c.Create(ctx, client.CreateOptions{Timeout: 2 * time.Minute, Metadata: map[string]string{"run": run}, Env: map[string]string{"GREETING": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID == "" || sb.EnvdAccessToken == "" {
		t.Fatalf("create returned %+v", sb)
	}
	e := c.Envd(sb)

	t.Run("exec", func(t *testing.T) {
		var out, errb bytes.Buffer
		code, err := e.Exec(ctx, client.Command{Args: []string{"bash", "-c", `echo "$GREETING $EXTRA $(id -un) $PWD"; echo oops >&2; exit 3`}, Env: map[string]string{"EXTRA": "there"}, Dir: "/tmp"}, &out, &errb)
		if err != nil || code != 3 || out.String() != "hi there user /tmp\n" || errb.String() != "oops\n" {
			t.Fatalf("code %d err %v stdout %q stderr %q", code, err, out.String(), errb.String())
		}
		out.Reset()
		if code, err := e.Exec(ctx, client.Command{Args: []string{"id", "-un"}, User: "root"}, &out, io.Discard); err != nil || code != 0 || out.String() != "root\n" {
			t.Fatalf("as root: %d %v %q", code, err, out.String())
		}
	})
	t.Run("files", func(t *testing.T) {
		data := bytes.Repeat([]byte("roost\x00\xff"), 200_000)
		if err := e.Upload(ctx, "/home/user/deep/dir/blob", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		var back bytes.Buffer
		if err := e.Download(ctx, "/home/user/deep/dir/blob", &back); err != nil || !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("round trip: %d bytes, %v", back.Len(), err)
		}
		var apiErr *client.Error
		if err := e.Download(ctx, "/nope", io.Discard); !errors.As(err, &apiErr) || apiErr.Status != 404 {
			t.Fatalf("missing file: %v", err)
		}
	})
	t.Run("ports", func(t *testing.T) {
		if _, err := e.Exec(ctx, client.Command{Args: []string{"bash", "-c", "nohup python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 &"}}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			ports, err := e.Ports(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ports {
				if p.Port == 8123 && p.Forwarded {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("port 8123 never listed as forwarded: %+v", ports)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("shell", func(t *testing.T) {
		in, inW := io.Pipe()
		var out syncBuffer
		resize := make(chan client.Size, 1)
		done := make(chan int, 1)
		go func() {
			code, err := e.Shell(ctx, client.Terminal{Size: client.Size{Cols: 100, Rows: 30}, Resize: resize}, in, &out)
			if err != nil {
				t.Error(err)
			}
			done <- code
		}()
		io.WriteString(inW, "stty size\n")
		waitFor(t, &out, "30 100")
		resize <- client.Size{Cols: 120, Rows: 40}
		time.Sleep(200 * time.Millisecond)
		io.WriteString(inW, "stty size; exit 4\n")
		waitFor(t, &out, "40 120")
		select {
		case code := <-done:
			if code != 4 {
				t.Errorf("exit code %d", code)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("shell did not end")
		}
	})
	t.Run("list get timeout pause resume", func(t *testing.T) {
		other, err := c.Create(ctx, client.CreateOptions{Metadata: map[string]string{"run": run, "other": "yes"}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.List(ctx, client.ListOptions{Metadata: map[string]string{"run": run}})
		if err != nil || len(got) != 2 {
			t.Fatalf("list: %d, %v", len(got), err)
		}
		got, err = c.List(ctx, client.ListOptions{Metadata: map[string]string{"other": "yes", "run": run}})
		if err != nil || len(got) != 1 || got[0].ID != other.ID {
			t.Fatalf("filtered list: %+v, %v", got, err)
		}
		if err := c.SetTimeout(ctx, sb.ID, 10*time.Minute); err != nil {
			t.Fatal(err)
		}
		info, err := c.Get(ctx, sb.ID)
		if err != nil || time.Until(info.EndAt) < 9*time.Minute {
			t.Fatalf("get after timeout: %+v %v", info, err)
		}
		if err := c.Pause(ctx, other.ID, true); err != nil {
			t.Fatal(err)
		}
		if st, _ := c.Get(ctx, other.ID); st.State != "paused" {
			t.Errorf("state after pause: %q", st.State)
		}
		if _, err := c.Resume(ctx, other.ID, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(ctx, other.ID); err != nil {
			t.Fatal(err)
		}
		var apiErr *client.Error
		if _, err := c.Get(ctx, other.ID); !errors.As(err, &apiErr) || apiErr.Status != 404 {
			t.Fatalf("get after kill: %v", err)
		}
	})
	t.Run("describe snapshot", func(t *testing.T) {
		d, err := c.Describe(ctx, sb.ID)
		if err != nil || d.ID != sb.ID || d.Runtime != "namespace" || d.Capabilities == nil || !d.Capabilities.Pause ||
			!d.Capabilities.Snapshot || d.Hibernated == nil || *d.Hibernated || d.DiskBytes == nil {
			t.Fatalf("describe: %+v (capabilities %v) %v", d, d.Capabilities, err)
		}
		h, err := c.Hibernate(ctx, sb.ID)
		if err != nil || h.Hibernated == nil || !*h.Hibernated || h.State != "paused" {
			t.Fatalf("hibernate on namespace: %+v %v", h, err)
		}
		if d, err := c.Describe(ctx, sb.ID); err != nil || d.Paused != "hibernated" {
			t.Fatalf("describe a hibernated sandbox: %+v %v", d, err)
		}
		if _, err := c.Resume(ctx, sb.ID, time.Minute); err != nil {
			t.Fatalf("resume a hibernated sandbox: %v", err)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		var apiErr *client.Error
		if _, err := client.New(env.URL, "roost_wrong").List(ctx, client.ListOptions{}); !errors.As(err, &apiErr) || apiErr.Status != 401 {
			t.Fatalf("bad key: %v", err)
		}
	})
}

func waitFor(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q: %q", want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
