package bufpool

import "testing"

func TestPool(t *testing.T) {
	p := New()
	b := p.Get()
	if len(b) != Size {
		t.Fatalf("got %d bytes, want %d", len(b), Size)
	}
	p.Put(b[:10]) // a resliced buffer comes back whole
	p.Put(make([]byte, 7))
	for range 4 {
		if got := p.Get(); len(got) != Size {
			t.Fatalf("got %d bytes after Put, want %d", len(got), Size)
		}
	}
}

// A buffer's round trip through the pool allocates nothing once warm.
func TestPoolAllocs(t *testing.T) {
	p := New()
	p.Put(p.Get())
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get()) }); n != 0 {
		t.Fatalf("Get and Put allocate %v times", n)
	}
}
