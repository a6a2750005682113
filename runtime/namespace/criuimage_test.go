package namespace

import (
	"encoding/binary"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// usernsImage builds a user namespace image as CRIU writes one: the
// magics, then one UsernsEntry with the extents (first, lower_first,
// count) for uids and gids alike.
func usernsImage(extents ...[3]uint64) []byte {
	var entry []byte
	for _, field := range []protowire.Number{usernsUIDMap, usernsGIDMap} {
		for _, e := range extents {
			var ext []byte
			for i, v := range e {
				ext = protowire.AppendTag(ext, protowire.Number(i+1), protowire.VarintType)
				ext = protowire.AppendVarint(ext, v)
			}
			entry = protowire.AppendTag(entry, field, protowire.BytesType)
			entry = protowire.AppendBytes(entry, ext)
		}
	}
	b := binary.LittleEndian.AppendUint32(nil, criuCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, 0x55105940)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entry)))
	return append(b, entry...)
}

func TestShiftUserns(t *testing.T) {
	from, to := uint32(hostID(3)), uint32(hostID(7))
	got, err := shiftUserns(usernsImage([3]uint64{0, uint64(from), IDRange}), from, to, IDRange)
	if err != nil {
		t.Fatal(err)
	}
	if want := usernsImage([3]uint64{0, uint64(to), IDRange}); !slices.Equal(got, want) {
		t.Errorf("shifted image\n%x\nwant\n%x", got, want)
	}
	// Two extents of one range move together.
	two := usernsImage([3]uint64{0, uint64(from), 1000}, [3]uint64{1000, uint64(from) + 1000, IDRange - 1000})
	got, err = shiftUserns(two, from, to, IDRange)
	if want := usernsImage([3]uint64{0, uint64(to), 1000}, [3]uint64{1000, uint64(to) + 1000, IDRange - 1000}); err != nil || !slices.Equal(got, want) {
		t.Errorf("two extents: %v\n%x\nwant\n%x", err, got, want)
	}

	for name, bad := range map[string][]byte{
		"an extent outside the range": usernsImage([3]uint64{0, 0, IDRange}),
		"no extents":                  usernsImage(),
		"truncated":                   usernsImage([3]uint64{0, uint64(from), IDRange})[:14],
		"too short":                   {1, 2},
	} {
		if _, err := shiftUserns(bad, from, to, IDRange); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
