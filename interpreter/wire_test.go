package interpreter

import (
	"encoding/json"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	s := signer("key")
	frames, id, err := s.encode("session", "execute_request", map[string]any{"code": "1+1"})
	if err != nil {
		t.Fatal(err)
	}
	// A kernel's reply names its routing identity before the delimiter.
	m, err := s.decode(append([][]byte{[]byte("identity")}, frames...))
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Code string }
	if m.Header.MsgID != id || m.Header.MsgType != "execute_request" || json.Unmarshal(m.Content, &c) != nil || c.Code != "1+1" {
		t.Errorf("decoded %+v", m)
	}
	if _, err := signer("other").decode(frames); err == nil {
		t.Error("a message signed with another key decoded")
	}
	frames[5] = []byte(`{"code":"evil"}`)
	if _, err := s.decode(frames); err == nil {
		t.Error("a message whose content changed decoded")
	}
	if _, err := s.decode(frames[:3]); err == nil {
		t.Error("a truncated message decoded")
	}
}
