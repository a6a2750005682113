// Package interpreter is the code interpreter a sandbox serves on port
// 49999 (wire.InterpreterPort) for E2B's @e2b/code-interpreter package:
// stateful code contexts, each a kernel of its language (kernel.go): for
// R a Jupyter kernel the server speaks to over the Jupyter messaging
// protocol (ZeroMQ, HMAC-signed messages; wire.go, jupyter.go), for
// Python (IPython's shell), JavaScript, TypeScript, bash and Java a
// driver of the server's own (kernels/) spoken to over pipes (repl.go). The kernels' output is
// streamed back as the package reads it, one JSON object a line
// (stream.go). The sandbox's env vars reach the kernels through envd
// (sandboxenv.go); the languages and how each starts are in contexts.go.
//
// The routes (server.go): GET /health; POST /execute (code, and a
// context_id or a language, and env_vars for this run only); POST, GET
// /contexts; DELETE /contexts/{id}; POST /contexts/{id}/restart. Runs in
// one context are serialised; contexts run in parallel. A client that
// goes away interrupts its run; a kernel that dies ends the run with an
// error and starts again for the next one.
//
// It runs inside sandboxes: it imports nothing of the host side.
package interpreter
