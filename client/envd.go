package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"connectrpc.com/connect"

	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/wire"
)

// Envd reaches one sandbox's envd through the control plane's proxy.
type Envd struct {
	base string
	http *http.Client
	proc processconnect.ProcessClient
}

// Envd returns a handle on sb's envd; sb must carry its envd access token
// (Get and Create return it).
func (c *Client) Envd(sb Sandbox) *Envd {
	base := fmt.Sprintf("%s%s%s/%d", c.baseURL, wire.ProxyPrefix, url.PathEscape(sb.ID), wire.EnvdPort)
	hc := &http.Client{Transport: tokenTransport{token: sb.EnvdAccessToken, next: http.DefaultTransport}}
	// A sandbox's root can replace envd: bound each message, and take no
	// compressed ones, which connect-go unpacks whole.
	proc := processconnect.NewProcessClient(hc, base,
		connect.WithReadMaxBytes(maxEnvdMessage), connect.WithAcceptCompression("gzip", nil, nil))
	return &Envd{base: base, http: hc, proc: proc}
}

// Bounds of what the client reads from envd. envd sends process output in
// chunks of 32 KiB.
const (
	maxEnvdMessage = 4 << 20
	maxPortsAnswer = 1 << 20
)

// tokenTransport adds the sandbox's envd access token to every request.
type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set(wire.HeaderAccessToken, t.token)
	}
	return t.next.RoundTrip(r)
}

// Command is what Exec runs.
type Command struct {
	Args []string // Args[0] is the program
	Env  map[string]string
	Dir  string
	User string // empty: the sandbox's default user
}

// Exec runs a command, copies its output to stdout and stderr as it comes,
// and returns its exit code (-1 when a signal ended it).
func (e *Envd) Exec(ctx context.Context, cmd Command, stdout, stderr io.Writer) (int, error) {
	if len(cmd.Args) == 0 {
		return 0, errors.New("exec: no command")
	}
	cfg := &rpc.ProcessConfig{Cmd: cmd.Args[0], Args: cmd.Args[1:], Envs: cmd.Env}
	if cmd.Dir != "" {
		cfg.Cwd = &cmd.Dir
	}
	off := false
	req := connect.NewRequest(&rpc.StartRequest{Process: cfg, Stdin: &off})
	setUser(req.Header(), cmd.User)
	stream, err := e.proc.Start(ctx, req)
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			if _, err := stdout.Write(d.GetStdout()); err != nil {
				return 0, err
			}
			if _, err := stderr.Write(d.GetStderr()); err != nil {
				return 0, err
			}
		}
		if end := ev.GetEnd(); end != nil {
			return int(end.GetExitCode()), nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("exec: the stream ended without an exit status")
}

func setUser(h http.Header, user string) {
	if user != "" {
		h.Set("Authorization", "Basic "+basicUser(user))
	}
}

// Upload writes r to path in the sandbox, creating parent directories.
func (e *Envd) Upload(ctx context.Context, path string, r io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/files?path="+url.QueryEscape(path), r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	return nil
}

// Download copies the file at path in the sandbox to w.
func (e *Envd) Download(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/files?path="+url.QueryEscape(path), nil)
	if err != nil {
		return err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Port is a TCP port a server in the sandbox listens on.
type Port struct {
	Port      uint16 `json:"port"`
	Address   string `json:"address"`
	Forwarded bool   `json:"forwarded"`
}

// Ports lists the sandbox's listening TCP ports.
func (e *Envd) Ports(ctx context.Context) ([]Port, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/ports", nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	var ports []Port
	return ports, json.NewDecoder(io.LimitReader(resp.Body, maxPortsAnswer)).Decode(&ports)
}
