package writer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// defaultTracked bounds the conversations whose last seq a writer keeps in
// memory; beyond it, it reads the others' heads from the store again.
const defaultTracked = 100_000

// headReads bounds the store reads of conversation heads in flight.
const headReads = 16

// sequence tells the events that continue their conversations from those
// that do not, so that the store only ever takes a log the sequencer could
// have written (store.Store.Append's precondition). Within a conversation
// the events topic holds seqs 1, 2, 3, ... in log order, and one writer
// reads each partition in order; so an event is taken if its seq is the
// next one after the conversation's last seq. The last seq is what this
// writer took from the log since it was assigned the partition, or else
// the store's head when this writer first met the conversation since the
// assignment; an event at or below that head is a replay (after a restart
// or a rebalance) and is written again, idempotently.
//
// Anything else is skipped: a seq far ahead (it would leave the store's
// head beyond events that will never come), a conversation without its
// created event in the store, or a seq already taken in this run. The
// sequencer writes none of these; a record that is one comes from another
// producer (the topic should be writable by the sequencer only). If a
// store has lost events the writer already committed, the conversation's
// later events are skipped too, and counted, until `parley rebuild`
// restores the store: the store is then no longer the log's projection,
// and the count says so.
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

// convSeq is what a writer knows of one conversation: the store's last seq
// when it first met it, and the last seq it has taken since (at least the
// former).
type convSeq struct{ head, last int64 }

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
// conversations' new last seqs. Heads of conversations first seen are read
// from st; an error reading them is returned as is (the store is down, not
// the record bad) and leaves nothing taken. why explains a refusal.
func (s *sequence) check(ctx context.Context, st store.Store, batch []tracked) (ok []bool, why []string, err error) {
	s.applyForget()
	var unseen []string
	seen := make(map[string]bool)
	for _, t := range batch {
		c := t.ev.Conv
		if s.convs[c] == nil && !seen[c] {
			seen[c] = true
			unseen = append(unseen, c)
		}
	}
	heads, err := readHeads(ctx, st, unseen)
	if err != nil {
		return nil, nil, err
	}
	ok, why = make([]bool, len(batch)), make([]string, len(batch))
	for i, t := range batch {
		ev := t.ev
		c := s.convs[ev.Conv]
		if c == nil {
			c = &convSeq{head: heads[ev.Conv], last: heads[ev.Conv]}
			s.convs[ev.Conv] = c
			ps := s.part[t.partition]
			if ps == nil {
				ps = make(map[string]bool)
				s.part[t.partition] = ps
			}
			ps[ev.Conv] = true
		}
		switch {
		case ev.Seq == c.last+1:
			c.last = ev.Seq
			ok[i] = true
		case ev.Seq <= c.head:
			ok[i] = true // a replay of an event the store holds
		case c.last == 0:
			why[i] = fmt.Sprintf("seq %d of %s, of which the store holds nothing (no created event)", ev.Seq, ev.Conv)
		case ev.Seq > c.last:
			why[i] = fmt.Sprintf("seq %d of %s jumps past its last seq %d", ev.Seq, ev.Conv, c.last)
		default:
			why[i] = fmt.Sprintf("seq %d of %s was taken already in this run (last seq %d)", ev.Seq, ev.Conv, c.last)
		}
	}
	return ok, why, nil
}

// trim forgets conversations beyond the bound; call it once the store has
// everything check took (the store's heads are then exact).
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

// readHeads returns the last seq the store holds of each conversation (0
// for one it does not know), reading a few at once.
func readHeads(ctx context.Context, st store.Store, convs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(convs))
	if len(convs) == 0 {
		return out, nil
	}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		first error
		sem   = make(chan struct{}, headReads)
	)
	for _, conv := range convs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := st.Conversation(ctx, conv)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, store.ErrNotFound):
				out[conv] = 0
			case err != nil:
				if first == nil {
					first = fmt.Errorf("read the head of %s: %w", conv, err)
				}
			default:
				out[conv] = h.LastSeq
			}
		}()
	}
	wg.Wait()
	return out, first
}
