package namespace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// A CRIU image file is a magic number (two for most images: CRIU's
// common one, then the image's) and then entries, each a little-endian
// 32-bit length and that many bytes of a protobuf message. The user
// namespace image (userns-N.img) holds one UsernsEntry: repeated uid_map
// (field 1) and gid_map (field 2) extents, each first (1), lower_first
// (2) and count (3). lower_first is a host ID: the one thing a fork
// changes in the images.

// criuCommonMagic starts every image but the inventory and service ones.
const criuCommonMagic = 0x54564319

// Fields of CRIU's UsernsEntry and its extents.
const (
	usernsUIDMap     = 1
	usernsGIDMap     = 2
	extentLowerFirst = 2
)

// shiftUsernsImage writes to dst the user namespace image src with every
// extent's host IDs in [from, from+size) moved to start at to. An extent
// outside that range, or a malformed image, is an error: the map would
// give the fork IDs that are not its own.
func shiftUsernsImage(src, dst string, from, to, size int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("user namespace image: %w", err)
	}
	out, err := shiftUserns(b, uint32(from), uint32(to), uint32(size))
	if err != nil {
		return fmt.Errorf("user namespace image %s: %w", src, err)
	}
	return os.WriteFile(dst, out, 0o644)
}

func shiftUserns(b []byte, from, to, size uint32) ([]byte, error) {
	head := 4
	if len(b) >= 8 && binary.LittleEndian.Uint32(b) == criuCommonMagic {
		head = 8
	}
	if len(b) < head {
		return nil, errors.New("too short")
	}
	out := append([]byte(nil), b[:head]...)
	for rest := b[head:]; len(rest) > 0; {
		if len(rest) < 4 {
			return nil, errors.New("truncated entry")
		}
		n := binary.LittleEndian.Uint32(rest)
		if uint64(n) > uint64(len(rest)-4) {
			return nil, errors.New("truncated entry")
		}
		msg, err := shiftEntry(rest[4:4+n], from, to, size)
		if err != nil {
			return nil, err
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(msg)))
		out = append(out, msg...)
		rest = rest[4+n:]
	}
	return out, nil
}

// shiftEntry rewrites one UsernsEntry.
func shiftEntry(b []byte, from, to, size uint32) ([]byte, error) {
	extents := 0
	out, err := rewriteFields(b, func(num protowire.Number, typ protowire.Type, value []byte) ([]byte, error) {
		if (num != usernsUIDMap && num != usernsGIDMap) || typ != protowire.BytesType {
			return nil, nil
		}
		ext, _ := protowire.ConsumeBytes(value)
		shifted, err := shiftExtent(ext, from, to, size)
		if err != nil {
			return nil, err
		}
		extents++
		return protowire.AppendBytes(nil, shifted), nil
	})
	if err == nil && extents == 0 {
		err = errors.New("no ID map")
	}
	return out, err
}

// shiftExtent rewrites one extent's lower_first.
func shiftExtent(b []byte, from, to, size uint32) ([]byte, error) {
	seen := false
	out, err := rewriteFields(b, func(num protowire.Number, typ protowire.Type, value []byte) ([]byte, error) {
		if num != extentLowerFirst || typ != protowire.VarintType {
			return nil, nil
		}
		v, _ := protowire.ConsumeVarint(value)
		if v < uint64(from) || v >= uint64(from)+uint64(size) {
			return nil, fmt.Errorf("host ID %d is outside the captured sandbox's range %d+%d", v, from, size)
		}
		seen = true
		return protowire.AppendVarint(nil, v-uint64(from)+uint64(to)), nil
	})
	if err == nil && !seen {
		err = errors.New("an ID map extent without its host ID")
	}
	return out, err
}

// rewriteFields copies the protobuf message b field by field, each
// field's value replaced by what rewrite returns for it (its encoded
// value, without the tag), or kept when that is nil.
func rewriteFields(b []byte, rewrite func(num protowire.Number, typ protowire.Type, value []byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		value, err := rewrite(num, typ, b[n:n+m])
		if err != nil {
			return nil, err
		}
		if value == nil {
			out = append(out, b[:n+m]...)
		} else {
			out = append(protowire.AppendTag(out, num, typ), value...)
		}
		b = b[n+m:]
	}
	return out, nil
}
