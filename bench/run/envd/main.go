// Command envd measures a real envd binary over loopback: idle memory,
// process start latency, and /files throughput, each next to a local
// baseline measured in the same run. `make bench` runs it.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/bench/samples"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

func main() {
	bin := flag.String("envd", "bin/envd", "envd binary to measure")
	starts := flag.Int("starts", 1000, "process starts to time")
	size := flag.Int("mib", 256, "MiB to move through /files each way")
	flag.Parse()
	if err := run(*bin, *starts, *size<<20); err != nil {
		log.Fatal(err)
	}
}

type row struct {
	metric, value, baseline, target string
}

func run(bin string, starts, size int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-addr", addr, "-log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start envd: %w", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "http://" + addr
	if err := waitHealthy(base); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var rows []row

	time.Sleep(2 * time.Second) // let start-up garbage settle before reading RSS
	rss, err := rssMiB(cmd.Process.Pid)
	if err != nil {
		return err
	}
	rows = append(rows, row{"envd idle RSS", fmt.Sprintf("%.1f MiB", rss), "", "≤ 15 MiB"})

	lat, err := startLatencies(client, base, starts)
	if err != nil {
		return err
	}
	local := localForkExec(starts)
	if err := samples.Durations("envd-start-true", lat); err != nil {
		return err
	}
	rows = append(rows,
		row{"Start /bin/true → end, p50", ms(pct(lat, 50)), ms(pct(local, 50)) + " (local fork+exec)", "≤ 2 ms"},
		row{"Start /bin/true → end, p99", ms(pct(lat, 99)), ms(pct(local, 99)) + " (local fork+exec)", ""},
	)

	// envd's own throughput is measured on tmpfs, where the file system
	// does not set the pace; then on the disk, whose sustained write rate
	// (here a few hundred MB/s once the page cache's dirty limit is
	// reached) bounds any upload.
	up, down, copyRate, err := filesThroughput(client, base, size, memDir())
	if err != nil {
		return err
	}
	diskUp, diskDown, diskCopy, err := filesThroughput(client, base, size, "")
	if err != nil {
		return err
	}
	rows = append(rows,
		row{fmt.Sprintf("/files upload %d MiB (tmpfs)", size>>20), mbps(up), mbps(copyRate) + " (local file copy)", "≥ 500 MB/s"},
		row{fmt.Sprintf("/files download %d MiB (tmpfs)", size>>20), mbps(down), mbps(copyRate) + " (local file copy)", "≥ 500 MB/s"},
		row{fmt.Sprintf("/files upload %d MiB (disk)", size>>20), mbps(diskUp), mbps(diskCopy) + " (local file copy)", ""},
		row{fmt.Sprintf("/files download %d MiB (disk)", size>>20), mbps(diskDown), mbps(diskCopy) + " (local file copy)", ""},
	)

	// The same numbers as a `go test -bench` result line, which is what
	// the bench harness (bench/run) parses.
	fmt.Printf("BenchmarkEnvdBinary 1 0 ns/op %.2f rss-MiB %.3f start-p50-ms %.3f start-p99-ms %.3f baseline-start-p50-ms %.3f baseline-start-p99-ms "+
		"%.1f upload-MB/s %.1f download-MB/s %.1f copy-MB/s %.1f disk-upload-MB/s %.1f disk-download-MB/s %.1f disk-copy-MB/s\n",
		rss, msf(pct(lat, 50)), msf(pct(lat, 99)), msf(pct(local, 50)), msf(pct(local, 99)), up, down, copyRate, diskUp, diskDown, diskCopy)
	fmt.Println()
	fmt.Println("| metric | envd | baseline | target |")
	fmt.Println("|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s |\n", r.metric, r.value, r.baseline, r.target)
	}
	return nil
}

func waitHealthy(base string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("envd at %s not healthy", base)
}

func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// startLatencies times Start of /bin/true until its end event, as an SDK
// sees it: one unary-stream round trip per process.
func startLatencies(client *http.Client, base string, n int) ([]time.Duration, error) {
	c := processconnect.NewProcessClient(client, base)
	ctx := context.Background()
	out := make([]time.Duration, 0, n)
	for i := 0; i < n+20; i++ {
		t0 := time.Now()
		stream, err := c.Start(ctx, connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/true"}}))
		if err != nil {
			return nil, err
		}
		ended := false
		for stream.Receive() {
			ended = ended || stream.Msg().GetEvent().GetEnd() != nil
		}
		if err := stream.Err(); err != nil || !ended {
			return nil, fmt.Errorf("start /bin/true: ended=%v err=%v", ended, err)
		}
		if i >= 20 { // warm-up
			out = append(out, time.Since(t0))
		}
	}
	return out, nil
}

func localForkExec(n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		_ = exec.Command("/bin/true").Run()
		out = append(out, time.Since(t0))
	}
	return out
}

// memDir is /dev/shm when it is a tmpfs, else "" (the default temporary
// directory).
func memDir() string {
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == 0x01021994 { // TMPFS_MAGIC
		return "/dev/shm"
	}
	return ""
}

// filesThroughput uploads and downloads size bytes through envd's /files
// in a directory under parent ("" for the default temporary directory),
// beside a local copy of the same file there.
func filesThroughput(client *http.Client, base string, size int, parent string) (up, down, local float64, err error) {
	dir, err := os.MkdirTemp(parent, "envd-bench-")
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	data := make([]byte, 1<<20)
	rand.Read(data)
	f, err := os.Create(src)
	if err != nil {
		return 0, 0, 0, err
	}
	for i := 0; i < size>>20; i++ {
		f.Write(data)
	}
	f.Close()

	// Baseline: copy the file locally, through the page cache like envd does.
	t0 := time.Now()
	if err := copyFile(src, filepath.Join(dir, "copy")); err != nil {
		return 0, 0, 0, err
	}
	local = rate(size, time.Since(t0))

	dst := filepath.Join(dir, "uploaded")
	in, _ := os.Open(src)
	defer in.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/files?path="+dst, in)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = int64(size)
	t0 = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("upload: %s", resp.Status)
	}
	up = rate(size, time.Since(t0))

	t0 = time.Now()
	resp, err = client.Get(base + "/files?path=" + dst)
	if err != nil {
		return 0, 0, 0, err
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 1<<20))
	resp.Body.Close()
	if err != nil || n != int64(size) {
		return 0, 0, 0, fmt.Errorf("download: %d bytes, %v", n, err)
	}
	down = rate(size, time.Since(t0))
	return up, down, local, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string           { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
func msf(d time.Duration) float64         { return float64(d) / float64(time.Millisecond) }
func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }
func mbps(r float64) string               { return fmt.Sprintf("%.0f MB/s", r) }
