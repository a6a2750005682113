package controlplane

import (
	"errors"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

func TestNewCredential(t *testing.T) {
	for _, c := range []struct {
		kind   store.KeyKind
		prefix string
	}{{store.KindAPIKey, "e2b_"}, {store.KindAccessToken, "sk_e2b_"}} {
		plain, prefix, suffix := newCredential(c.kind)
		if err := checkFormat(c.kind, plain); err != nil {
			t.Fatalf("new %s %q: %v", c.kind, plain, err)
		}
		if !strings.HasPrefix(plain, prefix) || prefix != c.prefix+plain[len(c.prefix):len(c.prefix)+4] || !strings.HasSuffix(plain, suffix) || len(suffix) != 4 {
			t.Fatalf("new %s %q: prefix %q, suffix %q", c.kind, plain, prefix, suffix)
		}
		if again, _, _ := newCredential(c.kind); again == plain {
			t.Fatalf("two %ss are equal", c.kind)
		}
		m := maskOf(store.APIKey{Prefix: prefix, MaskSuffix: suffix})
		if m.Prefix != c.prefix || m.ValueLength != 40 || m.MaskedValuePrefix+"" != plain[len(c.prefix):len(c.prefix)+4] || m.MaskedValueSuffix != suffix {
			t.Fatalf("mask of %s %q = %+v", c.kind, plain, m)
		}
	}
}

func TestCheckFormat(t *testing.T) {
	hex40 := strings.Repeat("0123456789", 4)
	tests := []struct {
		kind store.KeyKind
		s    string
		ok   bool
	}{
		{store.KindAPIKey, "e2b_" + hex40, true},
		{store.KindAPIKey, "e2b_" + strings.ToUpper(strings.Repeat("abcdef0123", 4)), false},
		{store.KindAPIKey, "e2b_" + hex40[:39], false},
		{store.KindAPIKey, "e2b_" + hex40 + "0", false},
		{store.KindAPIKey, "e2b_" + hex40[:39] + "g", false},
		{store.KindAPIKey, "roost_abcdefghij234567abcdefghij234567", true},
		{store.KindAPIKey, "roost_test_0123456789abcdef", true},
		{store.KindAPIKey, "roost_short", false},
		{store.KindAPIKey, "roost_has space in it........", false},
		{store.KindAPIKey, "roost_" + strings.Repeat("a", 300), false},
		{store.KindAPIKey, "sk_e2b_" + hex40, false},
		{store.KindAPIKey, "", false},
		{store.KindAccessToken, "sk_e2b_" + hex40, true},
		{store.KindAccessToken, "e2b_" + hex40, false},
		{store.KindAccessToken, "roost_abcdefghij234567abcdefghij234567", false},
	}
	for _, tt := range tests {
		err := checkFormat(tt.kind, tt.s)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("checkFormat(%s, %q) = %v, want ok=%v", tt.kind, tt.s, err, tt.ok)
		}
	}
}
