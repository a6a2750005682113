// Package bufpool recycles the copy buffers of httputil.ReverseProxy,
// which would otherwise allocate one (32 KiB) for every proxied response.
// The agent's and the control plane's proxies share it.
package bufpool

import "sync"

// Size is the size of every buffer.
const Size = 32 << 10

// Pool is an httputil.BufferPool. The zero value is not usable; call New.
type Pool struct{ pool sync.Pool }

// New returns an empty Pool.
func New() *Pool {
	return &Pool{pool: sync.Pool{New: func() any { b := make([]byte, Size); return &b }}}
}

// Get returns a buffer of Size bytes.
func (p *Pool) Get() []byte { return *p.pool.Get().(*[]byte) }

// Put returns a buffer to the pool; buffers of another capacity are
// dropped.
func (p *Pool) Put(buf []byte) {
	if cap(buf) == Size {
		buf = buf[:Size]
		p.pool.Put(&buf)
	}
}
