package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// The request bodies of Firecracker's API (../shared/firecracker/
// firecracker-api.yaml; testdata/firecracker-api-facts.yaml records the
// parts the driver uses): only the fields the driver sets. Optional fields
// are omitted when zero, so Firecracker's defaults apply.

type logger struct {
	LogPath       string `json:"log_path"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level"`
	ShowLogOrigin bool   `json:"show_log_origin"`
}

type machineConfig struct {
	VCPUs           int  `json:"vcpu_count"`
	MemoryMiB       int  `json:"mem_size_mib"`
	SMT             bool `json:"smt"`
	TrackDirtyPages bool `json:"track_dirty_pages"`
}

type bootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

type drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	CacheType    string `json:"cache_type,omitempty"` // Unsafe, Writeback
	IOEngine     string `json:"io_engine,omitempty"`  // Sync, Async
}

type networkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	TxRateLimiter *rateLimiter `json:"tx_rate_limiter,omitempty"`
}

type rateLimiter struct {
	Bandwidth *tokenBucket `json:"bandwidth,omitempty"`
}

// tokenBucket holds Size tokens (bytes), refilled in RefillTimeMs; the
// refill starts once the OneTimeBurst budget is spent.
type tokenBucket struct {
	Size         int64 `json:"size"`
	OneTimeBurst int64 `json:"one_time_burst,omitempty"`
	RefillTimeMs int64 `json:"refill_time"`
}

type mmdsConfig struct {
	Version           string   `json:"version"` // V1, V2
	NetworkInterfaces []string `json:"network_interfaces"`
}

type action struct {
	Type string `json:"action_type"` // InstanceStart, SendCtrlAltDel, FlushMetrics
}

type vmState struct {
	State string `json:"state"` // Paused, Resumed
}

type snapshotCreate struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"` // Full, Diff
}

type snapshotLoad struct {
	SnapshotPath    string         `json:"snapshot_path"`
	MemBackend      *memoryBackend `json:"mem_backend"`
	TrackDirtyPages bool           `json:"track_dirty_pages"`
	ResumeVM        bool           `json:"resume_vm"`
	// ClockRealtime advances the guest's kvmclock by the time the
	// snapshot spent on disk, so the restored guest's clock is not behind.
	ClockRealtime bool `json:"clock_realtime"`
}

type memoryBackend struct {
	Type string `json:"backend_type"` // File, Uffd
	Path string `json:"backend_path"`
}

// instanceInfo is GET /'s answer (the fields the driver reads).
type instanceInfo struct {
	ID    string `json:"id"`
	State string `json:"state"` // Not started, Running, Paused
}

// api is a client of one Firecracker process's API socket. It holds no
// connection between calls: an agent that restarts finds the socket free.
type api struct {
	socket string
	hc     *http.Client
}

func newAPI(socket string) *api {
	return &api{socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}}
}

// apiError is an answer other than 2xx, with Firecracker's fault message.
type apiError struct {
	Method, Path string
	Status       int
	Fault        string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, e.Fault)
}

// call sends one request; in, when not nil, is the JSON body, and out,
// when not nil, receives the JSON answer.
func (a *api) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://firecracker"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var fault struct {
			Message string `json:"fault_message"`
		}
		if json.Unmarshal(b, &fault) != nil || fault.Message == "" {
			fault.Message = string(bytes.TrimSpace(b))
		}
		return &apiError{Method: method, Path: path, Status: resp.StatusCode, Fault: fault.Message}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("firecracker %s %s: answer: %w", method, path, err)
		}
	}
	return nil
}

func (a *api) put(ctx context.Context, path string, in any) error {
	return a.call(ctx, http.MethodPut, path, in, nil)
}

// waitReady waits until the API socket answers GET /.
func (a *api) waitReady(ctx context.Context) (instanceInfo, error) {
	for {
		var info instanceInfo
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := a.call(cctx, http.MethodGet, "/", nil, &info)
		cancel()
		if err == nil {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return instanceInfo{}, fmt.Errorf("firecracker api socket %s: %w (last: %v)", a.socket, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
