package sequencer

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// entryProto is the i-th entry of ch as a MessageEntry.
func entryProto(ch *winChunk, i int) *parleyv1.MessageEntry {
	e := &ch.entries[i]
	msgID, cmid, from := winRef{ch, i}.ids()
	return &parleyv1.MessageEntry{Seq: e.seq, Type: e.typ, MsgId: string(msgID), Cmid: string(cmid),
		From: string(from), Ts: e.ts, Target: e.target}
}

// chunkProto is ch as a MessageChunk.
func chunkProto(ch *winChunk) *parleyv1.MessageChunk {
	m := &parleyv1.MessageChunk{Chunk: ch.n}
	for i := range ch.entries {
		m.Entries = append(m.Entries, entryProto(ch, i))
	}
	return m
}

// headProto is c's head as its changelog record has it, pending entries
// and all.
func headProto(c *convState) *parleyv1.ConvState {
	h := proto.Clone(c.head).(*parleyv1.ConvState)
	if c.pending != nil {
		h.Pending = chunkProto(c.pending).Entries
	}
	return h
}

// windowEntries is c's window, oldest first.
func windowEntries(c *convState) []*parleyv1.MessageEntry {
	var es []*parleyv1.MessageEntry
	for _, ch := range c.chunks {
		es = append(es, chunkProto(ch).Entries...)
	}
	return append(es, headProto(c).Pending...)
}

// TestWindowEncoding: chunks and heads are encoded byte for byte as the
// generated code encodes the same messages, with ids of every length a
// window holds and numbers of every size (zero ones are left out, as
// proto3 does; negative ones take ten bytes), and decode to them.
func TestWindowEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	num := func() int64 {
		switch rng.IntN(5) {
		case 0:
			return 0
		case 1:
			return -rng.Int64N(math.MaxInt64)
		case 2:
			return math.MaxInt64
		default:
			return rng.Int64N(1 << (rng.IntN(62) + 1))
		}
	}
	id := func() string { return strings.Repeat("x", rng.IntN(maxWinID+1)) }
	for round := range 200 {
		n := 1 + rng.IntN(3*chunkSize)
		ch := newWinChunk(rng.IntN(n+1), rng.IntN(50))
		ch.n = num()
		want := &parleyv1.MessageChunk{Chunk: ch.n}
		for range n {
			e := &parleyv1.MessageEntry{Seq: num(), Type: parleyv1.EventType(rng.IntN(9)), MsgId: id(), Cmid: id(),
				From: id(), Ts: num(), Target: num()}
			if err := ch.addEntry(e); err != nil {
				t.Fatal(err)
			}
			want.Entries = append(want.Entries, e)
		}
		check := func(what string, r stateRecord, want interface{ MarshalVT() ([]byte, error) }) {
			t.Helper()
			got, err := encode(r)
			if err != nil {
				t.Fatal(err)
			}
			w, err := want.MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, w) || r.size() != len(w) {
				t.Fatalf("round %d: %s encoded as %x (size %d), want %x", round, what, got, r.size(), w)
			}
		}
		check("chunk", chunkRecord{ch}, want)
		var back parleyv1.MessageChunk
		if err := schema.UnmarshalMessageChunk(mustEncode(t, chunkRecord{ch}), &back); err != nil || !proto.Equal(&back, want) {
			t.Fatalf("round %d: chunk decoded as %v (%v), want %v", round, &back, err, want)
		}
		head := &parleyv1.ConvState{Conv: "c", Title: id(), LastSeq: num(), NextChunk: num(), FirstChunk: num(), MemberCount: num()}
		withPending := proto.Clone(head).(*parleyv1.ConvState)
		withPending.Pending = want.Entries
		check("head", headRecord{head, ch}, withPending)
		withPending.Pending = nil
		check("head without pending", headRecord{head, nil}, withPending)
		if head.MemberCount != withPending.MemberCount || len(head.Pending) != 0 {
			t.Fatalf("round %d: encoding changed the head: %v", round, head)
		}
	}
	// A head in memory never holds pending entries: encoding one is an
	// error, not a record with them twice.
	bad := &parleyv1.ConvState{Conv: "c", Pending: []*parleyv1.MessageEntry{{Seq: 1}}}
	if _, err := encode(headRecord{bad, nil}); err == nil {
		t.Fatal("a head with pending entries in memory encoded")
	}
}

func mustEncode(t *testing.T, r stateRecord) []byte {
	t.Helper()
	b, err := encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestoreRefusesLongIDs: an id longer than a window entry holds (no
// command has one) makes a restore fail, rather than be cut.
func TestRestoreRefusesLongIDs(t *testing.T) {
	long := strings.Repeat("u", maxWinID+1)
	for _, e := range []*parleyv1.MessageEntry{
		{Seq: 1, MsgId: long, Cmid: "c", From: "ann"},
		{Seq: 1, MsgId: "m", Cmid: long, From: "ann"},
		{Seq: 1, MsgId: "m", Cmid: "c", From: long},
	} {
		rs := newRestorer()
		head := &parleyv1.ConvState{Conv: g1, LastSeq: 1, Pending: []*parleyv1.MessageEntry{e}}
		v, err := head.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.add(headKey(g1), v); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.partition(testRules); err == nil || !strings.Contains(err.Error(), fmt.Sprint(maxWinID)) {
			t.Fatalf("restored an entry with a %d-byte id: %v", len(long), err)
		}
	}
}

// TestFlushEmptyValue: a record that encodes to no bytes (a head of all
// zero fields, which only a damaged changelog restores) is flushed as an
// empty value, not as nil, which would be a tombstone.
func TestFlushEmptyValue(t *testing.T) {
	p := newPartition(testRules)
	c := newConvState(&parleyv1.ConvState{})
	p.convs[""] = c
	p.touch(c)
	var got [][]byte
	if err := p.flush(func(_, v []byte) { got = append(got, v) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] == nil || len(got[0]) != 0 {
		t.Fatalf("flushed %q, want one empty value", got)
	}
}
