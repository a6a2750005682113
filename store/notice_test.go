package store

import (
	"context"
	"testing"
	"time"
)

// TestNotices: a notice announced on one store reaches the listeners of
// every store on the same database (on SQLite, the one store's own);
// Listen starts with a notice of TopicAll, and after a lost connection
// to PostgreSQL listens again and says so with another.
func TestNotices(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			url := b.url(t)
			a := openTest(t, url)
			other := a
			if b.name == "postgres" {
				other = openTest(t, url) // another control plane
			}
			got := make(chan Notice, 16)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				other.Listen(ctx, func(n Notice) { got <- n })
			}()
			defer func() { cancel(); <-done }()
			want := func(w Notice) {
				t.Helper()
				select {
				case n := <-got:
					if n != w {
						t.Fatalf("notice %+v, want %+v", n, w)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("no notice; want %+v", w)
				}
			}
			want(Notice{Topic: TopicAll})
			if err := a.Announce(context.Background(), Notice{Topic: "sandbox", Key: "sb-1:x"}); err != nil {
				t.Fatal(err)
			}
			want(Notice{Topic: "sandbox", Key: "sb-1:x"})
			if err := a.Announce(context.Background(), Notice{Topic: "keys"}); err != nil {
				t.Fatal(err)
			}
			want(Notice{Topic: "keys"})
			// Several in one statement, each heard.
			if err := a.Announce(context.Background(), Notice{Topic: "sandbox", Key: "sb-2"}, Notice{Topic: "sandbox", Key: "sb-3"}); err != nil {
				t.Fatal(err)
			}
			want(Notice{Topic: "sandbox", Key: "sb-2"})
			want(Notice{Topic: "sandbox", Key: "sb-3"})
			if err := a.Announce(context.Background(), Notice{Topic: "a:b"}); err == nil {
				t.Error("a topic with ':' was announced")
			}
			if b.name != "postgres" {
				return
			}
			// The listening connection is cut (a PostgreSQL restart, a
			// network fault): Listen connects again and says anything may
			// have changed.
			db := a.(*sqlStore).w
			ch := a.(*sqlStore).bus.(*pgBus).channel
			var n int
			if err := db.QueryRow(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1`,
				"LISTEN "+`"`+ch+`"`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("terminate the listener: %d, %v", n, err)
			}
			want(Notice{Topic: TopicAll})
			if err := a.Announce(context.Background(), Notice{Topic: "quotas", Key: "t1"}); err != nil {
				t.Fatal(err)
			}
			want(Notice{Topic: "quotas", Key: "t1"})
		})
	}
}

// openTest opens the store at url for t, closed at its cleanup.
func openTest(t *testing.T, url string) Store {
	t.Helper()
	s, err := Open(context.Background(), url, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
