// Package errdefs is roost's one error vocabulary: the categories every
// package wraps its errors in, and their translation at the two edges
// where errors leave a process (HTTP with E2B's error body, and Connect).
//
// A package says what went wrong by wrapping a category
// (fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)); an edge asks
// HTTPStatus, ConnectCode or FromConnect what that means on its wire.
// Nothing else maps errors to statuses or codes, and nothing matches
// error text.
//
// Unavailable and unreachable are two categories, not one:
//   - ErrUnavailable (503, Connect unavailable): roost itself cannot serve
//     the request now but may soon: no host has room, the sandbox is
//     starting or stopping, a host is full. Retrying later is right.
//   - ErrUnreachable (502, Connect unavailable): something roost forwards
//     to did not answer: a host agent that is down or refuses
//     connections, a sandbox's envd or server that cannot be reached or
//     broke off its answer. The request reached roost; its upstream failed.
//
// A Connect unavailable from an agent that answered is ErrUnavailable; a
// call that never got an answer (the transport failed) is ErrUnreachable.
//
// It imports nothing of roost's, so every package may use it.
package errdefs
