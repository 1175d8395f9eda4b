package fanout

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// members is a bounded cache of conversation memberships, kept in step with
// the member events fanout reads. A conversation not in the cache is loaded
// from the timeline store once the store holds the events before the one
// being pushed (the writer consumes the same log) and cached from then on.
// If the store is still behind when the poll's wait for it runs out, its
// members may include users removed since, who must get nothing after
// their removal: that one event then goes only to the users certainly
// members at its seq (sureRecipients), and nothing is cached. The others
// get it from history, as after any missed push.
//
// A load can see member changes from after the event being pushed (the
// store may be ahead of fanout). Members who joined later are filtered out
// by their join seq; a member removed later may miss pushes up to their
// removal.
type members struct {
	st       store.Store
	capacity int

	mu    sync.Mutex
	lru   *list.List // of *convMembers, most recently used first
	convs map[string]*list.Element
}

type convMembers struct {
	conv  string
	users map[string]int64 // user -> seq of the event that made them a member
	last  int64            // seq of the last event resolved from this entry
	// recips are the recipients of the events that change no membership,
	// from the one they were listed for up to (not including) seq
	// recipsUntil, the first join among the users they leave out: a busy
	// group's events share one list instead of each walking the map and
	// taking a copy. nil when not listed, and after a membership change.
	recips      []string
	recipsUntil int64
}

// errOutOfSequence is an event that does not follow the last one fanout
// resolved of its conversation (a seq jump or repeat, or a second created
// event): the sequencer writes none, so it is skipped rather than pushed
// (and its member changes are not applied). Only a cached conversation can
// tell; see schema.SkipOutOfSequence.
var errOutOfSequence = errors.New("fanout: event out of sequence")

func newMembers(st store.Store, capacity int) *members {
	return &members{st: st, capacity: capacity, lru: list.New(), convs: make(map[string]*list.Element)}
}

// clear forgets every conversation (after a rebalance: another instance
// may have applied member events this one did not see).
func (m *members) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lru.Init()
	clear(m.convs)
}

func (m *members) get(conv string) *convMembers {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.convs[conv]; e != nil {
		m.lru.MoveToFront(e)
		return e.Value.(*convMembers)
	}
	return nil
}

func (m *members) put(c *convMembers) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.convs[c.conv]; e != nil {
		e.Value = c
		m.lru.MoveToFront(e)
		return
	}
	m.convs[c.conv] = m.lru.PushFront(c)
	for m.lru.Len() > m.capacity {
		old := m.lru.Remove(m.lru.Back()).(*convMembers)
		delete(m.convs, old.conv)
	}
}

// load reads conv's members from the store once the store has seq atLeast,
// waiting for it until waitUntil at most. current reports whether the store
// had reached atLeast: only then may the result be cached.
func (m *members) load(ctx context.Context, conv string, atLeast int64, waitUntil time.Time) (c *convMembers, current bool, err error) {
	backoff := 5 * time.Millisecond
	for {
		head, err := m.st.Conversation(ctx, conv)
		switch {
		case err == nil && head.LastSeq >= atLeast:
			current = true
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, false, err
		case time.Now().Before(waitUntil):
			select {
			case <-ctx.Done():
				return nil, false, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 200*time.Millisecond)
			continue
		case err != nil: // not found, and no more waiting
			return &convMembers{conv: conv, users: map[string]int64{}}, false, nil
		}
		list, err := m.st.Members(ctx, conv)
		if err != nil {
			return nil, false, err
		}
		c := &convMembers{conv: conv, users: make(map[string]int64, len(list))}
		for _, ms := range list {
			c.users[ms.User] = ms.JoinedSeq
		}
		return c, current, nil
	}
}

// recipients returns the users who get ev: the members when it was
// sequenced (for a removal, including those removed), and applies ev's
// membership change to the cache. The list may be shared with other events
// of the conversation: it must not be modified. A conversation not cached
// is loaded from the store, waiting for the writer until waitUntil; if the
// store is still behind then, ev goes to sureRecipients only, and nothing
// is cached.
//
// A cached conversation takes only the event after the last one resolved
// from it; any other gets errOutOfSequence and changes nothing.
func (m *members) recipients(ctx context.Context, ev *parleyv1.Event, waitUntil time.Time) ([]string, error) {
	c := m.get(ev.Conv)
	if c != nil && ev.Seq != c.last+1 {
		return nil, fmt.Errorf("%w: seq %d of %s after seq %d", errOutOfSequence, ev.Seq, ev.Conv, c.last)
	}
	// The cache keeps copies of the event's strings: it may share its
	// record's memory (schema.DecodeSharedEvent), which they would keep
	// alive.
	if ev.Type == parleyv1.EventType_EVENT_TYPE_CREATED {
		c = &convMembers{conv: strings.Clone(ev.Conv), users: make(map[string]int64, len(ev.Members))}
		for _, u := range ev.Members {
			c.users[strings.Clone(u)] = ev.Seq
		}
		m.put(c)
	}
	if c == nil {
		loaded, current, err := m.load(ctx, strings.Clone(ev.Conv), ev.Seq-1, waitUntil)
		if err != nil {
			return nil, err
		}
		if !current {
			return sureRecipients(ev), nil
		}
		c = loaded
		m.put(c)
	}
	c.last = ev.Seq
	removal := ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED
	if ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED {
		for _, u := range ev.Members {
			c.users[strings.Clone(u)] = ev.Seq
		}
		c.recips = nil
	}
	if !removal && c.recips != nil && ev.Seq < c.recipsUntil {
		return c.recips, nil
	}
	out := make([]string, 0, len(c.users)+len(ev.Members))
	until := int64(math.MaxInt64)
	for u, joined := range c.users {
		if joined <= ev.Seq {
			out = append(out, u)
		} else {
			until = min(until, joined) // a load from a store ahead of fanout
		}
	}
	if removal {
		for _, u := range ev.Members {
			if _, ok := c.users[u]; !ok {
				out = append(out, u) // the store was already past the removal
			}
			delete(c.users, u)
		}
		c.recips = nil
		return out, nil
	}
	c.recips, c.recipsUntil = slices.Clip(out), until
	return c.recips, nil
}

// sureRecipients returns the users certainly members of ev's conversation
// at its seq, whatever the events before it: its sender (the sequencer
// takes nothing else from a non-member) and, for a member change, the
// users it adds or removes (a removal reaches the removed).
func sureRecipients(ev *parleyv1.Event) []string {
	out := make([]string, 0, 1+len(ev.Members))
	if ev.From != "" {
		out = append(out, strings.Clone(ev.From))
	}
	if ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED || ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED {
		for _, u := range ev.Members {
			if u != ev.From {
				out = append(out, strings.Clone(u))
			}
		}
	}
	return out
}

// current returns conv's members as the cache, or else the store, knows
// them now, for signals outside the log such as typing. It never caches:
// a signal is not ordered with the conversation's events.
func (m *members) current(ctx context.Context, conv string) (map[string]int64, error) {
	if c := m.get(conv); c != nil {
		return c.users, nil
	}
	c, _, err := m.load(ctx, conv, 0, time.Time{})
	if err != nil {
		return nil, err
	}
	return c.users, nil
}
