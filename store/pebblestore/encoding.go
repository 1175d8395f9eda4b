package pebblestore

import (
	"encoding/binary"
	"errors"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Head and membership values: a format version byte, then varints (and a
// length-prefixed title). A value with an unknown version is an error, never
// a guess.
const formatV1 = 1

var errCorrupt = errors.New("pebblestore: corrupt value")

func encodeHead(h store.Conversation) []byte {
	b := []byte{formatV1}
	b = binary.AppendUvarint(b, uint64(h.Kind))
	b = binary.AppendVarint(b, h.LastSeq)
	b = binary.AppendVarint(b, h.CreatedTS)
	b = binary.AppendUvarint(b, uint64(len(h.Title)))
	return append(b, h.Title...)
}

func decodeHead(v []byte) (store.Conversation, error) {
	var h store.Conversation
	d := decoder{b: v}
	if d.byte() != formatV1 {
		return h, errCorrupt
	}
	h.Kind = parleyv1.ConvKind(d.uvarint())
	h.LastSeq = d.varint()
	h.CreatedTS = d.varint()
	h.Title = d.string()
	return h, d.err()
}

func encodeMember(m store.Membership, changed int64) []byte {
	b := []byte{formatV1}
	b = binary.AppendVarint(b, m.JoinedSeq)
	b = binary.AppendVarint(b, m.RemovedSeq)
	b = binary.AppendVarint(b, m.ReadSeq)
	return binary.AppendVarint(b, changed)
}

func decodeMember(v []byte) (store.Membership, int64, error) {
	var m store.Membership
	d := decoder{b: v}
	if d.byte() != formatV1 {
		return m, 0, errCorrupt
	}
	m.JoinedSeq = d.varint()
	m.RemovedSeq = d.varint()
	m.ReadSeq = d.varint()
	changed := d.varint()
	return m, changed, d.err()
}

type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) err() error {
	if d.bad || len(d.b) != 0 {
		return errCorrupt
	}
	return nil
}
