// Command envd is roost's in-sandbox agent. See package envd.
//
// Its Go runtime does not size itself from its cgroup's CPU limit: that
// keeps the cgroup's files open for good (to follow the limit), and a
// namespace sandbox whose processes hold files of mounts CRIU restored
// cannot be hibernated again. envd runs with the machine's CPUs, as Go
// before 1.25 did.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"roost.dev/roost/envd/server"
	"roost.dev/roost/wire"
)

func main() {
	var (
		cfg      server.Config
		level    = new(slog.LevelVar)
		version  = flag.Bool("version", false, "print the version and exit")
		listenFD = flag.Int("listen-fd", -1, "serve on this inherited listening socket; -addr then only names the port (a sandbox init opens the socket before envd starts, so that connections queue instead of being refused)")
	)
	flag.StringVar(&cfg.Addr, "addr", ":"+strconv.Itoa(wire.EnvdPort), "listen address")
	flag.StringVar(&cfg.DefaultUser, "user", "", "default user for requests that name none (default: the user envd runs as)")
	flag.BoolVar(&cfg.ForwardPorts, "forward-ports", false, "forward servers listening only on loopback to the external addresses (inside a sandbox)")
	flag.IntVar(&cfg.ReserveThreads, "reserve-threads", 0, "OS threads to create at start and keep (inside a sandbox with a pids limit)")
	flag.BoolVar(&cfg.Guest, "guest", false, "envd is a VM guest's: let /init set the clock, hostname and random state")
	flag.BoolVar(&cfg.OwnHostname, "own-hostname", false, "envd's sandbox has a hostname of its own (a UTS namespace): let /init set it")
	flag.BoolVar(&cfg.LocalEnvs, "local-envs", false, "serve GET /envs without the access token to processes in the sandbox (loopback)")
	flag.TextVar(level, "log-level", level, "log level: debug, info, warn, error")
	flag.Parse()
	setProcessName()
	if *version {
		fmt.Println(server.Version)
		return
	}

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("envd failed to start", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serve := srv.Serve
	if *listenFD >= 0 {
		f := os.NewFile(uintptr(*listenFD), "listener")
		ln, err := net.FileListener(f)
		f.Close() // ln holds a duplicate
		if err != nil {
			log.Error("envd failed to start", "err", fmt.Errorf("listen-fd %d: %w", *listenFD, err))
			os.Exit(1)
		}
		serve = func(ctx context.Context) error { return srv.ServeListener(ctx, ln) }
	}
	if err := serve(ctx); err != nil {
		log.Error("envd stopped", "err", err)
		os.Exit(1)
	}
}
