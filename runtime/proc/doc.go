// Package proc follows the host processes runtime drivers start for their
// sandboxes (a namespace sandbox's init, a VM's VMM), which outlive the
// agent that started them: it starts one from a thread inside a sandbox's
// network namespace and reaps it, identifies it across agent restarts by
// its pid and start time (so a reused pid is not taken for it), reads its
// resource use, and ends it.
//
// It knows nothing of sandboxes, namespaces other than the network one,
// cgroups or VMMs' control sockets: the drivers do.
package proc
