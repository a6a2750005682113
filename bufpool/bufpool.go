// Package bufpool recycles the copy buffers of httputil.ReverseProxy,
// which would otherwise allocate one (32 KiB) for every proxied response.
// The agent's and the control plane's proxies share it.
package bufpool

import "sync"

// Size is the size of every buffer.
const Size = 32 << 10

// Pool is an httputil.BufferPool. The zero value is not usable; call New.
type Pool struct {
	pool sync.Pool // *[]byte of Size bytes
	// boxes holds the *[]byte that Get emptied, for Put to fill again:
	// httputil.BufferPool trades in []byte, and boxing one anew at every
	// Put would allocate once per proxied response.
	boxes sync.Pool
}

// New returns an empty Pool.
func New() *Pool {
	return &Pool{pool: sync.Pool{New: func() any { b := make([]byte, Size); return &b }}}
}

// Get returns a buffer of Size bytes.
func (p *Pool) Get() []byte {
	box := p.pool.Get().(*[]byte)
	buf := *box
	*box = nil
	p.boxes.Put(box)
	return buf
}

// Put returns a buffer to the pool; buffers of another capacity are
// dropped.
func (p *Pool) Put(buf []byte) {
	if cap(buf) != Size {
		return
	}
	box, _ := p.boxes.Get().(*[]byte)
	if box == nil {
		box = new([]byte)
	}
	*box = buf[:Size]
	p.pool.Put(box)
}
