package process

import (
	"sync"

	rpc "roost.dev/roost/gen/process"
)

// queueDepth is how many events an attached stream may have in flight
// before the process's output reader blocks on it. Deep enough that a burst
// of output does not stall on a client that is merely a little behind.
const queueDepth = 256

// subscriber is one attached stream.
type subscriber struct {
	events chan *rpc.ProcessEvent
	gone   chan struct{} // closed when the stream detaches
}

// output fans a process's events out to its attached streams and remembers
// what a late attacher needs: the PTY scrollback and the end event.
type output struct {
	mu         sync.Mutex // guards the fields below
	subs       map[*subscriber]struct{}
	scrollback *ring // nil for pipe processes
	end        *rpc.ProcessEvent_EndEvent
}

func newOutput(scrollback int) *output {
	o := &output{subs: map[*subscriber]struct{}{}}
	if scrollback > 0 {
		o.scrollback = newRing(scrollback)
	}
	return o
}

// attach registers a stream. It returns the scrollback the stream must send
// before anything it receives on sub.events, and the end event when the
// process has already finished (sub is then nil).
func (o *output) attach() (sub *subscriber, backlog []byte, end *rpc.ProcessEvent_EndEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.scrollback != nil {
		backlog = o.scrollback.bytes()
	}
	if o.end != nil {
		return nil, backlog, o.end
	}
	sub = &subscriber{events: make(chan *rpc.ProcessEvent, queueDepth), gone: make(chan struct{})}
	o.subs[sub] = struct{}{}
	return sub, backlog, nil
}

// detach unregisters a stream; the process no longer waits for it.
func (o *output) detach(sub *subscriber) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.subs[sub]; ok {
		delete(o.subs, sub)
		close(sub.gone)
	}
}

// publish delivers a data event to every attached stream, blocking while a
// stream's queue is full. Only output readers call it, and never after
// finish.
func (o *output) publish(data *rpc.ProcessEvent_DataEvent, raw []byte) {
	ev := &rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: data}}
	o.mu.Lock()
	if o.scrollback != nil {
		o.scrollback.write(raw)
	}
	subs := make([]*subscriber, 0, len(o.subs))
	for s := range o.subs {
		subs = append(subs, s)
	}
	o.mu.Unlock()
	for _, s := range subs {
		select {
		case s.events <- ev:
		case <-s.gone:
		}
	}
}

// finish records the end event, delivers it, and closes every stream's
// queue. Called once, after all output has been published.
func (o *output) finish(end *rpc.ProcessEvent_EndEvent) {
	ev := &rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: end}}
	o.mu.Lock()
	o.end = end
	subs := o.subs
	o.subs = map[*subscriber]struct{}{}
	o.mu.Unlock()
	for s := range subs {
		select {
		case s.events <- ev:
		case <-s.gone:
		}
		close(s.events)
	}
}

// ended reports whether the process has finished.
func (o *output) ended() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.end != nil
}

// ring keeps the last len(buf) bytes written to it.
type ring struct {
	buf  []byte
	next int
	full bool
}

func newRing(size int) *ring { return &ring{buf: make([]byte, size)} }

func (r *ring) write(p []byte) {
	if len(p) >= len(r.buf) {
		copy(r.buf, p[len(p)-len(r.buf):])
		r.next, r.full = 0, true
		return
	}
	n := copy(r.buf[r.next:], p)
	if n < len(p) {
		copy(r.buf, p[n:])
		r.full = true
	}
	r.next = (r.next + len(p)) % len(r.buf)
	if r.next == 0 && len(p) > 0 {
		r.full = true
	}
}

func (r *ring) bytes() []byte {
	if !r.full {
		return append([]byte(nil), r.buf[:r.next]...)
	}
	out := make([]byte, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
