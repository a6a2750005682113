package interpreter

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The Jupyter wire format: a message is ZeroMQ frames, the routing
// identities, the delimiter, the HMAC-SHA256 (hex) of the next four, and
// four JSON documents: header, parent header, metadata, content. Extra
// frames after them are binary buffers, which the server neither sends
// nor reads.

const (
	delimiter       = "<IDS|MSG>"
	protocolVersion = "5.3"
)

// header is a message's header (and a reply's parent header).
type header struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// message is a decoded message.
type message struct {
	Header  header
	Parent  header
	Content json.RawMessage
}

// signer signs and checks messages with a kernel's key.
type signer []byte

func (s signer) sign(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s)
	for _, p := range parts {
		m.Write(p)
	}
	sum := m.Sum(nil)
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum)
	return out
}

// encode makes the frames of a new message of msgType with content, and
// returns its ID.
func (s signer) encode(session, msgType string, content any) ([][]byte, string, error) {
	h := header{MsgID: newID(), Session: session, Username: "roost", Date: time.Now().UTC().Format(time.RFC3339Nano), MsgType: msgType, Version: protocolVersion}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, "", err
	}
	cb, err := json.Marshal(content)
	if err != nil {
		return nil, "", err
	}
	parent, meta := []byte("{}"), []byte("{}")
	return [][]byte{[]byte(delimiter), s.sign(hb, parent, meta, cb), hb, parent, meta, cb}, h.MsgID, nil
}

// decode reads a message's frames, checking its signature.
func (s signer) decode(frames [][]byte) (message, error) {
	i := 0
	for i < len(frames) && string(frames[i]) != delimiter {
		i++
	}
	f := frames[min(i+1, len(frames)):]
	if len(f) < 5 {
		return message{}, errors.New("jupyter message: too few frames")
	}
	if !hmac.Equal(f[0], s.sign(f[1], f[2], f[3], f[4])) {
		return message{}, errors.New("jupyter message: bad signature")
	}
	var m message
	if err := json.Unmarshal(f[1], &m.Header); err != nil {
		return message{}, fmt.Errorf("jupyter message header: %w", err)
	}
	_ = json.Unmarshal(f[2], &m.Parent) // {} for a message without a parent
	m.Content = f[4]
	return m, nil
}

// newID is a random ID for messages, sessions, keys and contexts.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
