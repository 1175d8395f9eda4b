package sequencer

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Changelog keys (see schema/parley/v1/state.proto):
//
//	<conv>/h          ConvState
//	<conv>/m/<user>   MemberState, or a tombstone once removed
//	<conv>/k/<chunk>  MessageChunk, or a tombstone once out of the window

func headKey(conv string) string                 { return string(appendHeadKey(nil, conv)) }
func memberKey(conv, user string) string         { return string(appendMemberKey(nil, conv, user)) }
func chunkKey(conv string, n int64) string       { return string(appendChunkKey(nil, conv, n)) }
func appendHeadKey(b []byte, conv string) []byte { return append(append(b, conv...), "/h"...) }
func appendMemberKey(b []byte, conv, user string) []byte {
	return append(append(append(b, conv...), "/m/"...), user...)
}
func appendChunkKey(b []byte, conv string, n int64) []byte {
	return strconv.AppendInt(append(append(b, conv...), "/k/"...), n, 10)
}

// flush hands every state change since the last flush to emit as changelog
// records (a nil value is a tombstone) and clears the change marks. The
// touched conversations are counted again for the cache's budget, and
// marked as differing from the state store's copy. The keys and values
// are cut from a few slabs, not allocated one by one: a transaction
// writes a head record for every conversation it touches. emit may keep
// them; nothing writes to them again.
func (p *partition) flush(emit func(key, value []byte)) error {
	p.clock++
	var keys, values []byte
	if n := len(p.dirty); n > 0 {
		keys = make([]byte, 0, n*3*(len(p.dirty[0].head.Conv)+12))
	}
	key := func(from int) []byte { return keys[from:len(keys):len(keys)] }
	value := func(r stateRecord) ([]byte, error) {
		n := r.size()
		if n == 0 {
			return []byte{}, nil // empty, not nil: a nil value is a tombstone
		}
		if cap(values)-len(values) < n {
			// Doubling from a small first slab: a quiet transaction
			// writes a few small records.
			values = make([]byte, 0, max(n, min(2*cap(values), changelogSlab), 1<<10))
		}
		v, err := r.appendTo(values[len(values) : len(values) : len(values)+n])
		if err != nil {
			return nil, err
		}
		if len(v) != n {
			return nil, fmt.Errorf("a changelog record of %d bytes, sized %d", len(v), n)
		}
		values = values[:len(values)+n]
		return v, nil
	}
	for _, c := range p.dirty {
		c.used, c.unstored = p.clock, true
		cost := c.estimate()
		p.bytes += cost - c.cost
		c.cost = cost
		conv := c.head.Conv
		v, err := value(headRecord{c.head, c.pending})
		if err != nil {
			return err
		}
		from := len(keys)
		keys = appendHeadKey(keys, conv)
		emit(key(from), v)
		users := make([]string, 0, len(c.dirtyMembers))
		for u := range c.dirtyMembers {
			users = append(users, u)
		}
		sort.Strings(users)
		if len(users) > 0 && c.staleMembers == nil {
			c.staleMembers = make(map[string]struct{}, len(users))
		}
		for _, u := range users {
			c.staleMembers[u] = struct{}{}
			var v []byte
			if m := c.members[u]; m != nil {
				if v, err = value(vtRecord{m}); err != nil {
					return err
				}
			}
			from := len(keys)
			keys = appendMemberKey(keys, conv, u)
			emit(key(from), v)
		}
		for _, ch := range c.newChunks {
			v, err := value(chunkRecord{ch})
			if err != nil {
				return err
			}
			from := len(keys)
			keys = appendChunkKey(keys, conv, ch.n)
			emit(key(from), v)
		}
		for _, n := range c.droppedChunks {
			from := len(keys)
			keys = appendChunkKey(keys, conv, n)
			emit(key(from), nil)
		}
		c.dirty, c.dirtyMembers, c.newChunks, c.droppedChunks = false, nil, nil, nil
	}
	p.dirty = p.dirty[:0]
	return nil
}

// changelogSlab is the largest slab flush encodes values into.
const changelogSlab = 32 << 10

// vtMessage is a state record flush encodes.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
}

// restorer rebuilds a partition's state from its changelog records, read
// in log order (later records replace earlier ones with the same key).
type restorer struct {
	heads   map[string]*parleyv1.ConvState
	members map[string]map[string]*parleyv1.MemberState
	chunks  map[string]map[int64]*parleyv1.MessageChunk
}

func newRestorer() *restorer {
	return &restorer{
		heads:   make(map[string]*parleyv1.ConvState),
		members: make(map[string]map[string]*parleyv1.MemberState),
		chunks:  make(map[string]map[int64]*parleyv1.MessageChunk),
	}
}

// add folds one changelog record in. The state keeps value's memory (its
// strings share it): value must not change afterwards.
func (r *restorer) add(key string, value []byte) error {
	conv, rest, ok := strings.Cut(key, "/")
	if !ok {
		return fmt.Errorf("changelog key %q has no kind", key)
	}
	switch {
	case rest == "h":
		if value == nil {
			delete(r.heads, conv)
			return nil
		}
		h := new(parleyv1.ConvState)
		if err := schema.UnmarshalConvState(value, h); err != nil {
			return fmt.Errorf("changelog %q: %w", key, err)
		}
		if h.Conv != conv {
			return fmt.Errorf("changelog %q holds the state of conversation %q", key, clip(h.Conv))
		}
		if err := ascending(h.Pending); err != nil {
			return fmt.Errorf("changelog %q: pending entries: %w", key, err)
		}
		r.heads[conv] = h
	case strings.HasPrefix(rest, "m/"):
		user := rest[2:]
		ms := r.members[conv]
		if ms == nil {
			ms = make(map[string]*parleyv1.MemberState)
			r.members[conv] = ms
		}
		if value == nil {
			delete(ms, user)
			return nil
		}
		m := new(parleyv1.MemberState)
		if err := schema.UnmarshalMemberState(value, m); err != nil {
			return fmt.Errorf("changelog %q: %w", key, err)
		}
		if m.User != user {
			return fmt.Errorf("changelog %q holds the state of member %q", key, clip(m.User))
		}
		ms[user] = m
	case strings.HasPrefix(rest, "k/"):
		n, err := strconv.ParseInt(rest[2:], 10, 64)
		if err != nil {
			return fmt.Errorf("changelog key %q: bad chunk number", key)
		}
		cs := r.chunks[conv]
		if cs == nil {
			cs = make(map[int64]*parleyv1.MessageChunk)
			r.chunks[conv] = cs
		}
		if value == nil {
			delete(cs, n)
			return nil
		}
		ch := new(parleyv1.MessageChunk)
		if err := schema.UnmarshalMessageChunk(value, ch); err != nil {
			return fmt.Errorf("changelog %q: %w", key, err)
		}
		if len(ch.Entries) == 0 {
			return fmt.Errorf("changelog %q: empty chunk", key)
		}
		if ch.Chunk != n {
			return fmt.Errorf("changelog %q holds chunk %d", key, ch.Chunk)
		}
		if err := ascending(ch.Entries); err != nil {
			return fmt.Errorf("changelog %q: %w", key, err)
		}
		cs[n] = ch
	default:
		return fmt.Errorf("changelog key %q has an unknown kind", key)
	}
	return nil
}

// ascending checks that window entries run up in seq, as the sequencer
// writes them (lookups search them by seq).
func ascending(es []*parleyv1.MessageEntry) error {
	for i := 1; i < len(es); i++ {
		if es[i].Seq <= es[i-1].Seq {
			return fmt.Errorf("window entries out of order (seq %d after %d)", es[i].Seq, es[i-1].Seq)
		}
	}
	return nil
}

// partition assembles the restored state. Every chunk the head says is in
// the window must be present, and the window's entries must run up in seq
// to no further than the head's last seq: anything else means the
// changelog is not the one this sequencer wrote, and is an error (going on
// from it could break the seq and dedup guarantees).
func (r *restorer) partition(rl rules) (*partition, error) {
	p := newPartition(rl)
	for conv, h := range r.heads {
		c, err := r.conv(h)
		if err != nil {
			return nil, err
		}
		p.convs[conv] = c
	}
	return p, nil
}

// conv assembles the state of the conversation whose head is h.
func (r *restorer) conv(h *parleyv1.ConvState) (*convState, error) {
	conv := h.Conv
	c := newConvState(h)
	for u, m := range r.members[conv] {
		c.members[u] = m
	}
	if h.FirstChunk < 0 || h.FirstChunk > h.NextChunk {
		return nil, fmt.Errorf("changelog of %s: window of chunks %d..%d", conv, h.FirstChunk, h.NextChunk-1)
	}
	entries := len(h.Pending)
	for n := h.FirstChunk; n < h.NextChunk; n++ {
		ch := r.chunks[conv][n]
		if ch == nil {
			return nil, fmt.Errorf("changelog of %s lacks chunk %d (window %d..%d)", conv, n, h.FirstChunk, h.NextChunk-1)
		}
		entries += len(ch.Entries)
	}
	// The window is copied into chunks of its own: nothing of it shares
	// the records' memory. Each chunk joins the window before its entries
	// are indexed, so that the cmid index finds every one of them (see
	// indexCmid).
	c.cmids = cmidIndex{cur: make(map[uint64]int64, entries)}
	var first, last int64
	held := 0
	hold := func(ch *winChunk, es []*parleyv1.MessageEntry) error {
		for _, e := range es {
			if held == 0 {
				first = e.Seq
			} else if e.Seq <= last {
				return fmt.Errorf("changelog of %s: window entries out of order (seq %d after %d)", conv, e.Seq, last)
			}
			last = e.Seq
			held++
			if err := ch.addEntry(e); err != nil {
				return fmt.Errorf("changelog of %s: %w", conv, err)
			}
			c.index(&ch.entries[len(ch.entries)-1], cmidKey{e.From, e.Cmid})
		}
		return nil
	}
	for n := h.FirstChunk; n < h.NextChunk; n++ {
		es := r.chunks[conv][n].Entries
		ch := newWinChunk(len(es), meanIDBytes(es))
		ch.n = n
		c.chunks = append(c.chunks, ch)
		if err := hold(ch, es); err != nil {
			return nil, err
		}
	}
	if len(h.Pending) > 0 {
		c.pending = newWinChunk(max(len(h.Pending), chunkSize), meanIDBytes(h.Pending))
		if err := hold(c.pending, h.Pending); err != nil {
			return nil, err
		}
		h.Pending = nil
	}
	if entries > 0 && (first < 1 || last > h.LastSeq) {
		return nil, fmt.Errorf("changelog of %s: window seqs %d..%d, last seq %d", conv, first, last, h.LastSeq)
	}
	return c, nil
}

// meanIDBytes is the bytes of ids per entry of es, on average.
func meanIDBytes(es []*parleyv1.MessageEntry) int {
	n := 0
	for _, e := range es {
		n += len(e.MsgId) + len(e.Cmid) + len(e.From)
	}
	return n / len(es)
}
