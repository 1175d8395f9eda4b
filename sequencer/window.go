package sequencer

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// A conversation's dedup/edit window is most of the sequencer's memory:
// an entry for every recent message, for hours. It is held without
// pointers, so that the garbage collector has next to nothing to scan in
// it: a chunk keeps its entries in one array and their ids in one byte
// buffer. As MessageEntry messages, each entry and its ids were two
// objects holding four pointers: with 38 bytes of ids, 175–205 bytes an
// entry with its share of the rest, where a chunk's entry takes 62–100
// (see entryBytes).
//
// The changelog's MessageChunk and ConvState.pending are encoded straight
// from chunks, byte for byte as their generated code encodes them
// (TestWindowEncoding).

// winEntry is one window entry, a MessageEntry whose ids are in its
// chunk's ids: msg_id at off, then cmid, then from.
type winEntry struct {
	seq, ts, target          int64
	typ                      parleyv1.EventType
	off                      uint32
	msgLen, cmidLen, fromLen uint8
}

func (e *winEntry) idBytes() int { return int(e.msgLen) + int(e.cmidLen) + int(e.fromLen) }

// maxWinID is the longest id a window entry holds: its length is a byte.
// The sequencer's commands have ids of at most 64 bytes (see validate);
// a restored entry with a longer one is refused.
const maxWinID = 255

// winChunk is a run of window entries, in seq order: a full chunk of the
// changelog (n is its number) or a conversation's pending entries.
type winChunk struct {
	n       int64
	entries []winEntry
	ids     []byte
}

// newWinChunk returns an empty chunk with room for entries entries whose
// ids take idBytes each.
func newWinChunk(entries, idBytes int) *winChunk {
	return &winChunk{entries: make([]winEntry, 0, entries), ids: make([]byte, 0, entries*idBytes)}
}

// add appends an entry, which must come after the chunk's last; each id
// must be at most maxWinID bytes.
func (ch *winChunk) add(seq int64, typ parleyv1.EventType, msgID, cmid, from string, ts, target int64) {
	off := len(ch.ids)
	ch.ids = append(append(append(ch.ids, msgID...), cmid...), from...)
	ch.entries = append(ch.entries, winEntry{
		seq: seq, ts: ts, target: target, typ: typ, off: uint32(off),
		msgLen: uint8(len(msgID)), cmidLen: uint8(len(cmid)), fromLen: uint8(len(from)),
	})
}

// addEntry appends e (see add), or says why it cannot be held.
func (ch *winChunk) addEntry(e *parleyv1.MessageEntry) error {
	if max(len(e.MsgId), len(e.Cmid), len(e.From)) > maxWinID {
		return fmt.Errorf("window entry %d has an id over %d bytes", e.Seq, maxWinID)
	}
	ch.add(e.Seq, e.Type, e.MsgId, e.Cmid, e.From, e.Ts, e.Target)
	return nil
}

func (ch *winChunk) first() int64 { return ch.entries[0].seq }
func (ch *winChunk) last() int64  { return ch.entries[len(ch.entries)-1].seq }

// find returns the entry with the given seq.
func (ch *winChunk) find(seq int64) (winRef, bool) {
	es := ch.entries
	i := sort.Search(len(es), func(i int) bool { return es[i].seq >= seq })
	if i < len(es) && es[i].seq == seq {
		return winRef{ch, i}, true
	}
	return winRef{}, false
}

// winRef is the i-th entry of a chunk.
type winRef struct {
	ch *winChunk
	i  int
}

func (r winRef) entry() *winEntry { return &r.ch.entries[r.i] }

// ids returns the entry's ids, sharing the chunk's memory.
func (r winRef) ids() (msgID, cmid, from []byte) {
	e := r.entry()
	a := int(e.off)
	b := a + int(e.msgLen)
	c := b + int(e.cmidLen)
	return r.ch.ids[a:b:b], r.ch.ids[b:c:c], r.ch.ids[c : c+int(e.fromLen) : c+int(e.fromLen)]
}

// event is the entry as conv's event, its ids copied: what a duplicate's
// outcome carries.
func (r winRef) event(conv string) *parleyv1.Event {
	e := r.entry()
	msgID, cmid, from := r.ids()
	return &parleyv1.Event{
		Conv: conv, Seq: e.seq, Type: e.typ, MsgId: string(msgID), Cmid: string(cmid),
		From: string(from), Ts: e.ts, Target: e.target,
	}
}

// The field numbers of the window's messages in state.proto.
const (
	fieldEntrySeq protowire.Number = 1 + iota
	fieldEntryType
	fieldEntryMsgID
	fieldEntryCmid
	fieldEntryFrom
	fieldEntryTs
	fieldEntryTarget

	fieldChunkNumber  protowire.Number = 1
	fieldChunkEntries protowire.Number = 2

	fieldHeadPending     protowire.Number = 11
	fieldHeadMemberCount protowire.Number = 12
)

// varintSize and bytesSize are the sizes of a field of proto3: nothing
// for a zero value.
func varintSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func bytesSize(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(n)
}

func appendVarintField(b []byte, f protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, f, protowire.VarintType), v)
}

func appendBytesField(b []byte, f protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, f, protowire.BytesType), v)
}

// entrySize is the size of the i-th entry as a MessageEntry.
func (ch *winChunk) entrySize(i int) int {
	e := &ch.entries[i]
	return varintSize(uint64(e.seq)) + varintSize(uint64(e.typ)) + bytesSize(int(e.msgLen)) +
		bytesSize(int(e.cmidLen)) + bytesSize(int(e.fromLen)) + varintSize(uint64(e.ts)) + varintSize(uint64(e.target))
}

// entriesSize is the size of the entries as a repeated MessageEntry field
// (of a number below 16: a one-byte tag).
func (ch *winChunk) entriesSize() int {
	n := 0
	for i := range ch.entries {
		n += 1 + protowire.SizeBytes(ch.entrySize(i))
	}
	return n
}

// appendEntries appends the entries as the repeated MessageEntry field f.
func (ch *winChunk) appendEntries(b []byte, f protowire.Number) []byte {
	for i := range ch.entries {
		e := &ch.entries[i]
		msgID, cmid, from := winRef{ch, i}.ids()
		b = protowire.AppendTag(b, f, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(ch.entrySize(i)))
		b = appendVarintField(b, fieldEntrySeq, uint64(e.seq))
		b = appendVarintField(b, fieldEntryType, uint64(e.typ))
		b = appendBytesField(b, fieldEntryMsgID, msgID)
		b = appendBytesField(b, fieldEntryCmid, cmid)
		b = appendBytesField(b, fieldEntryFrom, from)
		b = appendVarintField(b, fieldEntryTs, uint64(e.ts))
		b = appendVarintField(b, fieldEntryTarget, uint64(e.target))
	}
	return b
}

// stateRecord is a changelog record's value: its size, and its encoding
// appended to a buffer.
type stateRecord interface {
	size() int
	appendTo(b []byte) ([]byte, error)
}

// chunkRecord is a full chunk as a MessageChunk.
type chunkRecord struct{ ch *winChunk }

func (r chunkRecord) size() int {
	return varintSize(uint64(r.ch.n)) + r.ch.entriesSize()
}

func (r chunkRecord) appendTo(b []byte) ([]byte, error) {
	b = appendVarintField(b, fieldChunkNumber, uint64(r.ch.n))
	return r.ch.appendEntries(b, fieldChunkEntries), nil
}

// headRecord is a conversation's head as a ConvState, with its pending
// entries (h.Pending is always empty in memory).
type headRecord struct {
	h       *parleyv1.ConvState
	pending *winChunk // nil: none
}

func (r headRecord) size() int {
	n := r.h.SizeVT()
	if r.pending != nil {
		n += r.pending.entriesSize()
	}
	return n
}

// appendTo encodes the head's fields but member_count with its generated
// code, then pending (field 11) and member_count (field 12): the fields
// in order, as the generated code would with pending in h. h.MemberCount
// is zeroed for the call and put back: only the goroutine that owns the
// partition touches its heads.
func (r headRecord) appendTo(b []byte) ([]byte, error) {
	if len(r.h.Pending) > 0 {
		return b, fmt.Errorf("conversation %s: a head in memory with pending entries", r.h.Conv)
	}
	mc := r.h.MemberCount
	r.h.MemberCount = 0
	b, err := appendVT(b, r.h)
	r.h.MemberCount = mc
	if err != nil {
		return b, err
	}
	if r.pending != nil {
		b = r.pending.appendEntries(b, fieldHeadPending)
	}
	return appendVarintField(b, fieldHeadMemberCount, uint64(mc)), nil
}

// vtRecord is a generated message as a stateRecord.
type vtRecord struct{ m vtMessage }

func (r vtRecord) size() int                         { return r.m.SizeVT() }
func (r vtRecord) appendTo(b []byte) ([]byte, error) { return appendVT(b, r.m) }

// appendVT appends m's encoding by its generated code.
func appendVT(b []byte, m vtMessage) ([]byte, error) {
	n := m.SizeVT()
	b = append(b, make([]byte, n)...)
	if _, err := m.MarshalToSizedBufferVT(b[len(b)-n:]); err != nil {
		return b[:len(b)-n], err
	}
	return b, nil
}

// encode returns r's encoding in a buffer of its own.
func encode(r stateRecord) ([]byte, error) {
	return r.appendTo(make([]byte, 0, r.size()))
}
