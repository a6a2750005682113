package controlplane

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	rpc "roost.dev/roost/gen/process"
)

// A tampered envd is played by an HTTP server on loopback that answers
// Process.Start (the edge of the world: the sandbox's root can put any
// server on envd's port). The control plane's exec must end each attack
// with a bounded answer or error, allocating a bounded amount, and still
// serve a genuine envd afterwards.

// envelope frames one Connect streaming message.
func envelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

func eventFrame(ev *rpc.ProcessEvent) []byte {
	b, err := proto.Marshal(&rpc.StartResponse{Event: ev})
	if err != nil {
		panic(err)
	}
	return envelope(0, b)
}

func dataEvent(out []byte) []byte {
	return eventFrame(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: &rpc.ProcessEvent_DataEvent{
		Output: &rpc.ProcessEvent_DataEvent_Stdout{Stdout: out}}}})
}

func endEvent() []byte {
	return eventFrame(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: &rpc.ProcessEvent_EndEvent{Exited: true, Status: "exit status 0"}}})
}

// fakeEnvd serves Process.Start with body, which writes the stream.
func fakeEnvd(t *testing.T, compressed bool, body func(w http.ResponseWriter, flush func())) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+proto")
		if compressed {
			w.Header().Set("Connect-Content-Encoding", "gzip")
		}
		w.WriteHeader(http.StatusOK)
		flush := func() { w.(http.Flusher).Flush() }
		w.Write(eventFrame(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Start{Start: &rpc.ProcessEvent_StartEvent{Pid: 1}}}))
		body(w, flush)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// allocated runs fn and returns the bytes the process allocated meanwhile
// (all goroutines: the client's too).
func allocated(fn func()) uint64 {
	var before, after goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&before)
	fn()
	goruntime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func attackServer() *Server {
	return &Server{cfg: Config{ExecOutputLimit: 1 << 20}, execClient: &http.Client{Transport: graceTransport{next: &http.Transport{}}}}
}

func runExec(s *Server, base string, timeout time.Duration) (execResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "true"}}
	return s.exec(ctx, envdTarget{sandboxID: "sbx", base: base}, cmd, "", timeout)
}

// stillServes checks that the same server runs an exec on a genuine envd.
func stillServes(t *testing.T, s *Server) {
	t.Helper()
	base := fakeEnvd(t, false, func(w http.ResponseWriter, _ func()) {
		w.Write(dataEvent([]byte("ok\n")))
		w.Write(endEvent())
		w.Write(envelope(2, []byte("{}")))
	})
	res, err := runExec(s, base, 10*time.Second)
	if err != nil || res.Stdout != "ok\n" {
		t.Fatalf("exec after the attack: %+v, %v", res, err)
	}
}

// Gzip bomb: one compressed message of 8 KiB that unpacks to 1 GiB.
func TestAttackTamperedEnvdGzipBomb(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 1024 {
		zw.Write(zeros)
	}
	zw.Close()
	base := fakeEnvd(t, true, func(w http.ResponseWriter, _ func()) {
		w.Write(envelope(1, bomb.Bytes()))
		w.Write(envelope(2, []byte("{}")))
	})
	s := attackServer()
	var err error
	n := allocated(func() { _, err = runExec(s, base, 10*time.Second) })
	if err == nil {
		t.Fatal("a compressed message was accepted")
	}
	if n > 64<<20 {
		t.Fatalf("the bomb cost %d MiB of allocations", n>>20)
	}
	t.Logf("refused with %v; %d KiB allocated", err, n>>10)
	stillServes(t, s)
}

// One message that claims 1 GiB and streams it: refused past the read
// limit, without holding it.
func TestAttackTamperedEnvdHugeMessage(t *testing.T) {
	base := fakeEnvd(t, false, func(w http.ResponseWriter, _ func()) {
		hdr := []byte{0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], 1<<30)
		w.Write(hdr)
		chunk := make([]byte, 1<<20)
		for range 1024 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	s := attackServer()
	var err error
	n := allocated(func() { _, err = runExec(s, base, 30*time.Second) })
	if err == nil {
		t.Fatal("a 1 GiB message was accepted")
	}
	if n > 64<<20 {
		t.Fatalf("the message cost %d MiB of allocations", n>>20)
	}
	t.Logf("refused with %v; %d KiB allocated", err, n>>10)
	stillServes(t, s)
}

// A 1 GiB stream of output in genuine 32 KiB events, of bytes that take
// six bytes each as JSON: the answer keeps what fits the limit as JSON
// and says it was truncated.
func TestAttackTamperedEnvdGigabyteStream(t *testing.T) {
	chunk := dataEvent(bytes.Repeat([]byte{1}, 32<<10))
	base := fakeEnvd(t, false, func(w http.ResponseWriter, _ func()) {
		for range (1 << 30) / (32 << 10) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.Write(endEvent())
		w.Write(envelope(2, []byte("{}")))
	})
	s := attackServer()
	res, err := runExec(s, base, 50*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if !res.StdoutTruncated || len(b) > 2*s.cfg.ExecOutputLimit+1024 {
		t.Fatalf("answer of %d bytes as JSON (limit %d per stream), truncated %v", len(b), s.cfg.ExecOutputLimit, res.StdoutTruncated)
	}
	stillServes(t, s)
}

// An endless stream that never ends the process: the exec answers at its
// deadline, timed out, with bounded output.
func TestAttackTamperedEnvdEndlessBody(t *testing.T) {
	chunk := dataEvent(bytes.Repeat([]byte("y\n"), 16<<10))
	base := fakeEnvd(t, false, func(w http.ResponseWriter, flush func()) {
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	s := attackServer()
	res, err := runExec(s, base, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || !res.StdoutTruncated || len(res.Stdout) > s.cfg.ExecOutputLimit {
		t.Fatalf("timed out %v, %d bytes of stdout, truncated %v", res.TimedOut, len(res.Stdout), res.StdoutTruncated)
	}
	stillServes(t, s)
}
