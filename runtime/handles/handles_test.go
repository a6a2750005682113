package handles

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

func TestTable(t *testing.T) {
	var tab Table[string]
	if _, err := tab.Get("a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	r, err := tab.Reserve("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Reserve("a"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second reserve: %v, want ErrAlreadyExists", err)
	}
	if _, err := tab.Get("a"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("get reserved: %v, want ErrConflict", err)
	}
	if !tab.Known("a") || len(tab.All()) != 0 {
		t.Error("a reservation is not known, or counts as a handle")
	}
	v := "handle"
	r.OnFail(func() { t.Error("a published handle's steps were undone") })
	r.Publish(&v)
	r.Release()
	if h, err := tab.Get("a"); err != nil || *h != "handle" || len(tab.All()) != 1 {
		t.Errorf("get published: %v, %v", h, err)
	}
	tab.Delete("a")
	if tab.Known("a") {
		t.Error("a deleted id is known")
	}
}

// A reservation released without a handle undoes its steps, the last
// first, once, and frees its ID.
func TestReservationUnwinds(t *testing.T) {
	var tab Table[string]
	r, err := tab.Reserve("a")
	if err != nil {
		t.Fatal(err)
	}
	var order []int
	for i := range 3 {
		r.OnFail(func() { order = append(order, i) })
	}
	r.Release()
	r.Release()
	if !slices.Equal(order, []int{2, 1, 0}) {
		t.Errorf("undone in order %v, want 2 1 0 once", order)
	}
	if tab.Known("a") {
		t.Error("a released reservation keeps its id")
	}
}

// Readers and writers of the table run at once (go test -race checks
// that every access holds the lock).
func TestTableConcurrent(t *testing.T) {
	var tab Table[int]
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				id := fmt.Sprint(i, "-", j%5)
				if r, err := tab.Reserve(id); err == nil {
					if j%2 == 0 {
						r.Publish(&j)
					}
					r.Release()
				}
				_ = tab.Known(id)
				_ = tab.All()
				if j%3 == 0 {
					tab.Delete(id)
				}
			}
		})
	}
	wg.Wait()
}

type sample struct {
	ID  string `json:"id"`
	Pid int    `json:"pid"`
}

func TestEncodeDecode(t *testing.T) {
	st, err := Encode(3, sample{ID: "x", Pid: 7})
	if err != nil || st.Version != 3 || st.IsZero() {
		t.Fatalf("encode: %+v, %v", st, err)
	}
	var back sample
	if err := Decode(st, 3, "/nonexistent", &back); err != nil || back != (sample{"x", 7}) {
		t.Errorf("decode: %+v, %v", back, err)
	}
	if err := Decode(st, 4, "/nonexistent", &back); err == nil {
		t.Error("decoded a state of another version")
	}
}

// A sandbox an older agent recorded has no driver state: its driver wrote
// a state file of its own, with the version inside.
func TestDecodeLegacyFile(t *testing.T) {
	legacy := filepath.Join(t.TempDir(), "driver.json")
	var back sample
	if err := Decode(runtime.DriverState{}, 1, legacy, &back); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no state and no file: %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(legacy, []byte(`{"version": 1, "id": "old", "pid": 42}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Decode(runtime.DriverState{}, 1, legacy, &back); err != nil || back != (sample{"old", 42}) {
		t.Errorf("legacy file: %+v, %v", back, err)
	}
	if err := Decode(runtime.DriverState{}, 2, legacy, &back); err == nil {
		t.Error("read a legacy file of another version")
	}
	os.WriteFile(legacy, []byte(`{"version": 1, "id": `), 0o600)
	if err := Decode(runtime.DriverState{}, 1, legacy, &back); err == nil {
		t.Error("read a corrupt legacy file")
	}
}
