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
