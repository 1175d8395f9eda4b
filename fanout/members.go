package fanout

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// members is a bounded cache of conversation memberships, kept in step with
// the member events fanout reads. A conversation not in the cache is loaded
// from the timeline store, once the store holds the events before the one
// being pushed (the writer consumes the same log), or after storeWait if the
// store lags further behind: pushes are best-effort and a client recovers a
// missed one through history.
//
// A load can see member changes from after the event being pushed (the
// store may be ahead of fanout). Members who joined later are filtered out
// by their join seq; a member removed later may miss pushes up to their
// removal.
type members struct {
	st        store.Store
	storeWait time.Duration
	capacity  int

	mu    sync.Mutex
	lru   *list.List // of *convMembers, most recently used first
	convs map[string]*list.Element
}

type convMembers struct {
	conv  string
	users map[string]int64 // user -> seq of the event that made them a member
}

func newMembers(st store.Store, capacity int, storeWait time.Duration) *members {
	return &members{st: st, storeWait: storeWait, capacity: capacity, lru: list.New(), convs: make(map[string]*list.Element)}
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

// load reads conv's members from the store, waiting (up to storeWait) until
// the store has seq atLeast.
func (m *members) load(ctx context.Context, conv string, atLeast int64) (*convMembers, error) {
	deadline := time.Now().Add(m.storeWait)
	backoff := 5 * time.Millisecond
	for {
		head, err := m.st.Conversation(ctx, conv)
		switch {
		case err == nil && head.LastSeq >= atLeast:
		case errors.Is(err, store.ErrNotFound) && atLeast <= 0:
			return &convMembers{conv: conv, users: map[string]int64{}}, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, err
		case time.Now().Before(deadline):
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 200*time.Millisecond)
			continue
		}
		list, err := m.st.Members(ctx, conv)
		if err != nil {
			return nil, err
		}
		c := &convMembers{conv: conv, users: make(map[string]int64, len(list))}
		for _, ms := range list {
			c.users[ms.User] = ms.JoinedSeq
		}
		return c, nil
	}
}

// recipients returns the users who get ev: the members when it was
// sequenced (for a removal, including those removed), and applies ev's
// membership change to the cache.
func (m *members) recipients(ctx context.Context, ev *parleyv1.Event) ([]string, error) {
	c := m.get(ev.Conv)
	if ev.Type == parleyv1.EventType_EVENT_TYPE_CREATED {
		c = &convMembers{conv: ev.Conv, users: make(map[string]int64, len(ev.Members))}
		for _, u := range ev.Members {
			c.users[u] = ev.Seq
		}
		m.put(c)
	}
	if c == nil {
		var err error
		if c, err = m.load(ctx, ev.Conv, ev.Seq-1); err != nil {
			return nil, err
		}
		m.put(c)
	}
	if ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED {
		for _, u := range ev.Members {
			c.users[u] = ev.Seq
		}
	}
	out := make([]string, 0, len(c.users)+len(ev.Members))
	for u, joined := range c.users {
		if joined <= ev.Seq {
			out = append(out, u)
		}
	}
	if ev.Type == parleyv1.EventType_EVENT_TYPE_MEMBER_REMOVED {
		for _, u := range ev.Members {
			if _, ok := c.users[u]; !ok {
				out = append(out, u) // the store was already past the removal
			}
			delete(c.users, u)
		}
	}
	return out, nil
}

// current returns conv's members as the cache (or else the store) knows
// them, for signals outside the log such as typing.
func (m *members) current(ctx context.Context, conv string) (map[string]int64, error) {
	if c := m.get(conv); c != nil {
		return c.users, nil
	}
	c, err := m.load(ctx, conv, 0)
	if err != nil {
		return nil, err
	}
	m.put(c)
	return c.users, nil
}
