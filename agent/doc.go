// Package agent is the host agent: it owns the sandboxes on one host.
//
// The Manager runs each sandbox's state machine (starting → running ⇄
// paused → stopped, error on failure) on top of a runtime.Runtime, the
// network package's slots and the template store; it waits for envd to be
// healthy and initialises it before a create returns, reaps sandboxes whose
// timeout passed, persists a versioned record per sandbox under
// <data>/sandboxes/<id>/sandbox.json, and at start-up re-adopts the
// sandboxes a previous agent left running and removes what a crash left
// half-made. It reads a sandbox's log (the console file its runtime
// appends to, runtime.LogFile) on request, parsing envd's JSON lines and
// the init's plain ones into entries, from a bounded tail of the file.
// The Server exposes the Manager as the Connect service
// roost.hostagent.v1.HostAgentService and proxies /proxy/{id}/{port}/... to
// sandbox ports, behind an optional bearer token. The Registrar joins a
// control plane: it registers once with a one-time registration token,
// keeps the accepted host ID and token in <data>/registration.json (so a
// restarted agent only heartbeats), and heartbeats its usage every 5 s.
//
// Templates (docs/templates.md): a template's start command runs in the
// background and its ready command passes before a create returns. A
// create with the control plane's TemplateRef runs on the tree of that
// manifest, whose missing layers are pulled once per manifest into
// <data>/blobs (a cache within a disk budget, least recently used trees
// and blobs evicted, never one in use; the control plane's own store in
// roost up). Build runs a template build: the agent is the builder's Env,
// giving it bases (fetched, imported, or the host's own trees as a layer)
// and build sandboxes (the create path over a build's tree on the
// namespace runtime, never listed, removed when their step ends or at the
// next start-up), and pushes the result's blobs to the control plane.
//
// Moves (move.go): a hibernated sandbox is exported as a tar stream
// (GET /moves/{id}: its record, its template, the runtime's export) and
// imported by another host's agent (PUT), hibernated there on a slot of
// its own; the control plane relays the stream and decides the order.
//
// Its metrics (prometheus.go: create latency, template pulls, and read at
// each scrape the host's capacity and sandboxes) go in Config.Registerer;
// it does not serve them (cmd/roost does, on --metrics-listen). Apart
// from them, it samples every running sandbox's use (runtime.Stats) every
// Config.MetricsInterval into an in-memory history (history.go,
// docs/metrics.md), which GetSandboxMetrics serves.
//
// The agent never stops sandboxes when it exits: they live as long as the
// host, and the next agent adopts them. It does not pick or construct a
// runtime driver (cmd/roost wires one in), does not build network plumbing,
// template trees or layers itself (package template and its builder do),
// and knows nothing of the control plane's code: it
// speaks the control plane's HTTP JSON host endpoints, and is called back
// over RPC.
package agent
