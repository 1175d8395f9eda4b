package writer

import (
	"fmt"
	"strings"
	"sync"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// defaultTracked bounds the conversations whose last seq a writer keeps in
// memory; beyond it, it forgets some.
const defaultTracked = 100_000

// sequence tells the events that continue their conversations from those
// that do not, from what this writer itself took: within a conversation
// the events topic holds seqs 1, 2, 3, ... in log order, and one writer
// reads each partition in order, so after an event at seq n it takes only
// n+1. The first event of a conversation it meets since the partition was
// assigned is taken as it is (a replay after a restart or a rebalance is
// written again, idempotently). What follows it out of turn is skipped: a
// seq far ahead, which would leave the store's head beyond events that
// will never come, or a seq taken already. The sequencer writes neither; a
// record that is one comes from another producer (the topic should be
// writable by the sequencer only).
//
// Nothing is skipped on the store's word: a read of the store can be
// wrong for a moment (a node restarting), and a skip is for good.
//
// A sequence is used by one goroutine at a time, except forget.
type sequence struct {
	max int

	convs map[string]*convSeq
	part  map[int32]map[string]bool

	mu        sync.Mutex
	forgotten []int32 // partitions revoked since the last batch
	all       bool
}

func newSequence(max int) *sequence {
	if max <= 0 {
		max = defaultTracked
	}
	return &sequence{max: max, convs: make(map[string]*convSeq), part: make(map[int32]map[string]bool)}
}

// convSeq is what a writer knows of one conversation: the last seq it has
// taken since the partition was assigned.
type convSeq struct{ last int64 }

// forget drops what is known of partitions (nil: all) before the next
// batch: another writer may have stored more of them meanwhile. Safe to
// call from any goroutine.
func (s *sequence) forget(partitions []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if partitions == nil {
		s.all = true
	}
	s.forgotten = append(s.forgotten, partitions...)
}

func (s *sequence) applyForget() {
	s.mu.Lock()
	parts, all := s.forgotten, s.all
	s.forgotten, s.all = nil, false
	s.mu.Unlock()
	if all {
		clear(s.convs)
		clear(s.part)
		return
	}
	for _, p := range parts {
		for conv := range s.part[p] {
			delete(s.convs, conv)
		}
		delete(s.part, p)
	}
}

// tracked is an event of a batch and the partition it came from.
type tracked struct {
	partition int32
	ev        *parleyv1.Event
}

// check returns, for each event of batch (in log order), whether it
// continues its conversation, and takes those that do as the
// conversations' new last seqs; why explains a refusal.
func (s *sequence) check(batch []tracked) (ok []bool, why []string) {
	s.applyForget()
	ok, why = make([]bool, len(batch)), make([]string, len(batch))
	for i, t := range batch {
		ev := t.ev
		c := s.convs[ev.Conv]
		if c == nil {
			// A copy: the event may share its record's memory, which the
			// key would keep alive (schema.DecodeSharedEvent).
			conv := strings.Clone(ev.Conv)
			c = &convSeq{last: ev.Seq - 1}
			s.convs[conv] = c
			ps := s.part[t.partition]
			if ps == nil {
				ps = make(map[string]bool)
				s.part[t.partition] = ps
			}
			ps[conv] = true
		}
		switch {
		case ev.Seq == c.last+1:
			c.last = ev.Seq
			ok[i] = true
		case ev.Seq > c.last:
			why[i] = fmt.Sprintf("seq %d of %s jumps past its last seq %d", ev.Seq, ev.Conv, c.last)
		default:
			why[i] = fmt.Sprintf("seq %d of %s was taken already (last seq %d)", ev.Seq, ev.Conv, c.last)
		}
	}
	return ok, why
}

// trim forgets conversations beyond the bound; call it once the store has
// everything check took.
func (s *sequence) trim() {
	if len(s.convs) <= s.max {
		return
	}
	for p, convs := range s.part {
		for conv := range convs {
			if len(s.convs) <= s.max*3/4 {
				return
			}
			delete(s.convs, conv)
			delete(convs, conv)
		}
		if len(convs) == 0 {
			delete(s.part, p)
		}
	}
}
