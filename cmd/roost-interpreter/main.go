// Command roost-interpreter serves E2B's code interpreter on port 49999
// in a sandbox (package interpreter): the server the template
// code-interpreter-v1 starts.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"roost.dev/roost/interpreter"
	"roost.dev/roost/wire"
)

func main() {
	var cfg interpreter.Config
	addr := flag.String("addr", ":"+strconv.Itoa(wire.InterpreterPort), "listen address")
	flag.StringVar(&cfg.Python, "python", "/usr/bin/python3", "the Python that runs Python kernels (with ipykernel)")
	flag.StringVar(&cfg.R, "r", "/usr/bin/R", "the R that runs R kernels (with IRkernel)")
	flag.StringVar(&cfg.Node, "node", "/usr/bin/node", "the Node.js that runs JavaScript and TypeScript kernels (with Debian's node-acorn and node-typescript)")
	flag.StringVar(&cfg.Bash, "bash", "/bin/bash", "the bash that runs bash kernels")
	flag.StringVar(&cfg.Java, "java", "/usr/bin/java", "the java that runs Java kernels (JShell: a JDK)")
	flag.StringVar(&cfg.SandboxEnv, "sandbox-env", "http://127.0.0.1:"+strconv.Itoa(wire.EnvdPort)+"/envs", "where the sandbox's env vars are read (envd); empty for nowhere")
	flag.StringVar(&cfg.Cwd, "cwd", "/home/user", "a context's working directory when it names none")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := interpreter.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	defer srv.Close()
	// Listen first: a client that comes while the first kernel starts
	// waits for it instead of being refused.
	// Plain TCP: Go listens with MPTCP by default, which CRIU cannot dump,
	// and a sandbox of this template is captured, hibernated and forked.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, "tcp", *addr)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	go func() {
		if err := srv.Start(ctx); err != nil {
			log.Error("default python context", "err", err)
		}
	}()
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
