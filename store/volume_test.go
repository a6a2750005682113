package store

import (
	"context"
	"errors"
	"sync"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestValidVolumeName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"data", "my_vol-2", "A", "x"} {
		if err := ValidVolumeName(name); err != nil {
			t.Errorf("ValidVolumeName(%q) = %v", name, err)
		}
	}
	long := make([]byte, MaxVolumeName+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, name := range []string{"", "a/b", "..", ".", "../x", "a b", "vol.1", string(long), "ü"} {
		if err := ValidVolumeName(name); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ValidVolumeName(%q) = %v, want errdefs.ErrInvalid", name, err)
		}
	}
}

func newVolume(id, team, name string) Volume {
	return Volume{ID: id, TeamID: team, Name: name, SizeMB: 64, HostID: "h1", TokenHash: HashKey("tok-" + id), CreatedAt: base}
}

func TestVolumes(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		v := newVolume("vol1", "a", "data")
		if err := s.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name string
			v    Volume
			want error
		}{
			{"taken name", newVolume("vol2", "a", "data"), errdefs.ErrConflict},
			{"taken id", newVolume("vol1", "b", "other"), errdefs.ErrConflict},
			{"bad name", newVolume("vol3", "a", "../x"), errdefs.ErrInvalid},
			{"no size", Volume{ID: "vol4", TeamID: "a", Name: "n", HostID: "h1", TokenHash: HashKey("x")}, errdefs.ErrInvalid},
			{"no team", newVolume("vol5", "nobody", "n"), errdefs.ErrNotFound},
		} {
			if err := s.CreateVolume(ctx, c.v); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
		// Another team may use the name.
		if err := s.CreateVolume(ctx, newVolume("vol6", "b", "data")); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetVolume(ctx, "a", "vol1")
		if err != nil || got.Name != "data" || got.SizeMB != 64 || !got.CreatedAt.Equal(base) || string(got.TokenHash) != string(v.TokenHash) {
			t.Fatalf("GetVolume = %+v, %v", got, err)
		}
		if _, err := s.GetVolume(ctx, "b", "vol1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("another team's volume: %v", err)
		}
		if got, err := s.GetVolume(ctx, "", "vol1"); err != nil || got.TeamID != "a" {
			t.Errorf("GetVolume of any team = %+v, %v", got, err)
		}
		if got, err := s.VolumeByName(ctx, "b", "data"); err != nil || got.ID != "vol6" {
			t.Errorf("VolumeByName = %+v, %v", got, err)
		}
		if err := s.CreateVolume(ctx, newVolume("vol7", "a", "another")); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListVolumes(ctx, "a")
		if err != nil || len(list) != 2 || list[0].Name != "another" || list[1].Name != "data" {
			t.Fatalf("ListVolumes = %+v, %v", list, err)
		}
		if err := s.DeleteVolume(ctx, "b", "vol1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("delete of another team's volume: %v", err)
		}
		if err := s.DeleteVolume(ctx, "a", "vol7"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteVolume(ctx, "a", "vol7"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("second delete: %v", err)
		}
	})
}

func TestVolumeMounts(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		if err := s.CreateVolume(ctx, newVolume("vol1", "a", "data")); err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"sb1", "sb2", "sb3"} {
			if err := s.CreateSandbox(ctx, newSandbox(id, "a", i)); err != nil {
				t.Fatal(err)
			}
		}
		w := func(sb string) VolumeMount { return VolumeMount{SandboxID: sb, VolumeID: "vol1", Path: "/data"} }
		if err := s.AttachVolumes(ctx, "sb1", []VolumeMount{w("sb1")}); err != nil {
			t.Fatal(err)
		}
		var busy *VolumeBusyError
		err := s.AttachVolumes(ctx, "sb2", []VolumeMount{w("sb2")})
		if !errors.As(err, &busy) || busy.Sandbox != "sb1" || !busy.Writable || !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("second writer: %v, want a VolumeBusyError naming sb1", err)
		}
		// Read-only mounts go beside the writer; all or none are kept.
		ro := VolumeMount{SandboxID: "sb2", VolumeID: "vol1", Path: "/ro", ReadOnly: true}
		if err := s.AttachVolumes(ctx, "sb2", []VolumeMount{ro, {SandboxID: "sb2", VolumeID: "nope", Path: "/x"}}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("mount of an unknown volume: %v", err)
		}
		if ms, _ := s.SandboxVolumes(ctx, "sb2"); len(ms) != 0 {
			t.Fatalf("a failed attach kept %+v", ms)
		}
		if err := s.AttachVolumes(ctx, "sb2", []VolumeMount{ro}); err != nil {
			t.Fatal(err)
		}
		if hs, err := s.VolumeHolders(ctx, "vol1"); err != nil || len(hs) != 2 || hs[0].SandboxID != "sb1" || hs[1] != ro {
			t.Fatalf("holders = %+v, %v", hs, err)
		}
		if err := s.DeleteVolume(ctx, "a", "vol1"); !errors.As(err, &busy) || busy.Sandbox != "sb1" {
			t.Fatalf("delete of a mounted volume: %v", err)
		}
		// A stopped sandbox holds nothing; a deleted one's mounts go.
		if _, err := s.UpdateSandbox(ctx, "sb1", func(sb *Sandbox) error { sb.State = SandboxStopped; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.AttachVolumes(ctx, "sb3", []VolumeMount{w("sb3")}); err != nil {
			t.Fatalf("writer after the first stopped: %v", err)
		}
		for _, id := range []string{"sb2", "sb3"} {
			if err := s.DeleteSandbox(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if hs, err := s.VolumeHolders(ctx, "vol1"); err != nil || len(hs) != 0 {
			t.Fatalf("holders after the sandboxes went = %+v, %v", hs, err)
		}
		if err := s.DeleteVolume(ctx, "a", "vol1"); err != nil {
			t.Fatalf("delete of a free volume: %v", err)
		}
	})
}

func TestVolumeWritersRace(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		if err := s.CreateVolume(ctx, newVolume("vol1", "a", "data")); err != nil {
			t.Fatal(err)
		}
		const n = 8
		for i := range n {
			if err := s.CreateSandbox(ctx, newSandbox(sbID(i), "a", i)); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = s.AttachVolumes(ctx, sbID(i), []VolumeMount{{SandboxID: sbID(i), VolumeID: "vol1", Path: "/data"}})
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, errdefs.ErrConflict):
				t.Errorf("racing attach: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d writers attached, want 1", won)
		}
	})
}

func sbID(i int) string { return "sbr" + string(rune('a'+i)) }

// TestMoveVolume moves a volume between hosts of one volume directory:
// only from the host it is on, only while no live sandbox mounts it; a
// sandbox of the old host may not mount it after the move.
func TestMoveVolume(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		for _, h := range []string{"h1", "h2"} {
			if err := s.UpsertHost(ctx, Host{ID: h, State: HostReady, VolumeDirID: "vd-shared"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetHostVolumeDir(ctx, "h2", "vd-other"); err != nil {
			t.Fatal(err)
		}
		if h, err := s.GetHost(ctx, "h2"); err != nil || h.VolumeDirID != "vd-other" {
			t.Fatalf("host h2 = %+v, %v; want volume dir vd-other", h, err)
		}
		if err := s.SetHostVolumeDir(ctx, "nope", "x"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("volume dir of an unknown host: %v", err)
		}
		if err := s.CreateVolume(ctx, newVolume("vol1", "a", "data")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSandbox(ctx, newSandbox("sb1", "a", 0)); err != nil { // on h1
			t.Fatal(err)
		}
		if err := s.AttachVolumes(ctx, "sb1", []VolumeMount{{SandboxID: "sb1", VolumeID: "vol1", Path: "/data", ReadOnly: true}}); err != nil {
			t.Fatal(err)
		}
		var busy *VolumeBusyError
		if err := s.MoveVolume(ctx, "vol1", "h1", "h2"); !errors.As(err, &busy) || busy.Sandbox != "sb1" {
			t.Fatalf("move of a mounted volume: %v, want a VolumeBusyError naming sb1", err)
		}
		if _, err := s.UpdateSandbox(ctx, "sb1", func(sb *Sandbox) error { sb.State = SandboxStopped; return nil }); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			from, to string
			want     error
		}{
			{"h2", "h1", errdefs.ErrConflict}, // not where it is
			{"", "h2", errdefs.ErrInvalid},
			{"h1", "", errdefs.ErrInvalid},
		} {
			if err := s.MoveVolume(ctx, "vol1", c.from, c.to); !errors.Is(err, c.want) {
				t.Errorf("move %q → %q: %v, want %v", c.from, c.to, err, c.want)
			}
		}
		if err := s.MoveVolume(ctx, "nope", "h1", "h2"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("move of an unknown volume: %v", err)
		}
		if err := s.MoveVolume(ctx, "vol1", "h1", "h2"); err != nil {
			t.Fatalf("move of a free volume: %v", err)
		}
		if v, err := s.GetVolume(ctx, "a", "vol1"); err != nil || v.HostID != "h2" {
			t.Fatalf("after the move: %+v, %v; want host h2", v, err)
		}
		// A sandbox placed on h1 before the move may not mount it now.
		if err := s.CreateSandbox(ctx, newSandbox("sb2", "a", 1)); err != nil {
			t.Fatal(err)
		}
		err := s.AttachVolumes(ctx, "sb2", []VolumeMount{{SandboxID: "sb2", VolumeID: "vol1", Path: "/data"}})
		if !errors.Is(err, errdefs.ErrConflict) || errors.As(err, &busy) {
			t.Fatalf("mount on the old host after the move: %v, want a conflict naming the hosts", err)
		}
	})
}
