package client

import (
	"context"
	"slices"
	"sync"
)

// historyPage is the page size of gap fills and catch-ups: the most the
// server gives (it cuts a page at about 1 MiB). 500 was 5–10% slower to
// catch up 400,000 events (parley bench catchup).
const historyPage = 1000

// maxForbidden is how many forbidden answers a gap fill waits out.
const maxForbidden = 8

type itemKind uint8

const (
	itemEvent       itemKind = iota // a pushed event
	itemTrack                       // start tracking conv after seq
	itemCatchUp                     // a new connection: catch up every tracked conversation
	itemLateCatchUp                 // a while after: catch up those no push has come for since
	itemOverflow                    // pushes were dropped: recover them from history
	itemUpTo                        // deliver every conversation of upTo to its seq, then close done
)

type item struct {
	kind itemKind
	ev   Event
	conv string
	seq  int64
	upTo map[string]int64 // itemUpTo: conv -> seq
	from map[string]int64 // itemUpTo: conv -> where to start if not tracked
	done chan bool        // itemUpTo: true once delivered, false if the client stopped
}

// keptQueueItems is the largest array an empty queue keeps.
const keptQueueItems = 1024

// seqRange is the lowest and highest seq of a conversation's dropped pushes.
type seqRange struct{ lo, hi int64 }

// queue carries pushes and markers from the socket readers to the
// deliverer in arrival order, without ever blocking a reader. It holds at
// most max pushes; beyond that, pushes are dropped and remembered as seq
// ranges per conversation, and one itemOverflow marker, placed where the
// first of them would have been, makes the deliverer fetch them from
// history.
type queue struct {
	mu       sync.Mutex
	items    []item // items[head:] wait; the array is reused, not regrown
	head     int
	max      int
	wake     chan struct{}
	overflow map[string]seqRange
	marked   bool
	dropped  int64
}

func newQueue(max int) *queue {
	return &queue{max: max, wake: make(chan struct{}, 1), overflow: make(map[string]seqRange)}
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// add queues a marker (markers are never dropped).
func (q *queue) add(it item) {
	q.mu.Lock()
	q.appendLocked(it)
	q.mu.Unlock()
	q.signal()
}

// appendLocked queues it, first moving the waiting items to the front of
// the array when it is full and take has consumed at least half of it, so
// that a queue that never empties does not keep allocating new arrays.
func (q *queue) appendLocked(it item) {
	if len(q.items) == cap(q.items) && q.head >= len(q.items)/2 && q.head > 0 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, it)
}

// addEvent queues a push, or records it as dropped when the queue is full.
func (q *queue) addEvent(ev Event) {
	q.mu.Lock()
	if len(q.items)-q.head < q.max {
		q.appendLocked(item{kind: itemEvent, ev: ev})
	} else {
		q.dropped++
		r, ok := q.overflow[ev.Conv]
		if !ok {
			r = seqRange{ev.Seq, ev.Seq}
		}
		r.lo, r.hi = min(r.lo, ev.Seq), max(r.hi, ev.Seq)
		q.overflow[ev.Conv] = r
		if !q.marked {
			q.appendLocked(item{kind: itemOverflow})
			q.marked = true
		}
	}
	q.mu.Unlock()
	q.signal()
}

// take returns the next item, waiting until there is one or ctx ends. For
// itemOverflow it also returns the dropped ranges recorded so far.
func (q *queue) take(ctx context.Context) (item, map[string]seqRange, bool) {
	for {
		q.mu.Lock()
		if q.head < len(q.items) {
			it := q.items[q.head]
			q.items[q.head] = item{}
			if q.head++; q.head == len(q.items) {
				q.items, q.head = q.items[:0], 0
				if cap(q.items) > keptQueueItems {
					q.items = nil // a burst's array is not kept
				}
			}
			var over map[string]seqRange
			if it.kind == itemOverflow {
				over, q.overflow, q.marked = q.overflow, make(map[string]seqRange), false
			}
			q.mu.Unlock()
			return it, over, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return item{}, nil, false
		}
	}
}

func (q *queue) droppedCount() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// deliverer is the one goroutine that delivers events: it owns the
// position of every tracked conversation.
type deliverer struct {
	c     *Client
	convs map[string]*position
}

// position is how far a tracked conversation was delivered.
type position struct {
	last int64 // the last seq delivered
	// pushed: a push was delivered since the current connection's
	// catch-up. Everything up to that push was delivered (a gap is filled
	// first), and fanout pushes what follows it, so the late catch-up skips
	// the conversation. (A push fanout fails to deliver is recovered by the
	// conversation's next push or the next connect.)
	pushed bool
}

func newDeliverer(c *Client, tracked map[string]int64) *deliverer {
	d := &deliverer{c: c, convs: make(map[string]*position, len(tracked))}
	for conv, seq := range tracked {
		d.convs[conv] = &position{last: max(seq, 0)}
	}
	return d
}

// track starts tracking conv after seq, unless it is tracked; it returns
// the conversation's position and whether it was new.
func (d *deliverer) track(conv string, seq int64) (*position, bool) {
	if p := d.convs[conv]; p != nil {
		return p, false
	}
	p := &position{last: seq}
	d.convs[conv] = p
	return p, true
}

func (d *deliverer) loop() {
	defer d.c.wg.Done()
	defer close(d.c.events) // the only sender
	for {
		it, over, ok := d.c.q.take(d.c.ctx)
		if !ok {
			return
		}
		switch it.kind {
		case itemEvent:
			d.push(it.ev)
		case itemTrack:
			if p, added := d.track(it.conv, it.seq); added {
				d.catchUp(it.conv, p)
			}
		case itemCatchUp, itemLateCatchUp:
			convs := make([]string, 0, len(d.convs))
			for conv, p := range d.convs {
				if it.kind == itemCatchUp {
					p.pushed = false
				}
				if !p.pushed {
					convs = append(convs, conv)
				}
			}
			slices.Sort(convs)
			for _, conv := range convs {
				if !d.catchUp(conv, d.convs[conv]) {
					break
				}
			}
		case itemUpTo:
			ok := true
			convs := make([]string, 0, len(it.upTo))
			for conv := range it.upTo {
				convs = append(convs, conv)
			}
			slices.Sort(convs)
			for _, conv := range convs {
				p, _ := d.track(conv, it.from[conv])
				if !d.fill(conv, p, it.upTo[conv]) && d.c.ctx.Err() != nil {
					ok = false
					break
				}
			}
			it.done <- ok
		case itemOverflow:
			for conv, r := range over {
				p, _ := d.track(conv, r.lo-1)
				if !d.fill(conv, p, r.hi) && d.c.ctx.Err() != nil {
					break
				}
			}
		}
	}
}

// push handles a pushed event: drop a duplicate, deliver the next one,
// fill a gap first.
func (d *deliverer) push(ev Event) {
	p, _ := d.track(ev.Conv, ev.Seq-1) // if new, start at this push (at 0 for seq 1)
	if ev.Seq <= p.last {
		d.c.st.duplicates.Add(1)
		return
	}
	if ev.Seq > p.last+1 {
		d.c.st.gaps.Add(1)
		if !d.fill(ev.Conv, p, ev.Seq-1) {
			return
		}
		if ev.Seq <= p.last { // the history had it too
			d.c.st.duplicates.Add(1)
			return
		}
	}
	if d.emit(ev, p) {
		p.pushed = true
	}
}

// emit delivers ev (the next of its conversation, at p) and advances the
// position; false when the client stopped.
func (d *deliverer) emit(ev Event, p *position) bool {
	select {
	case d.c.events <- ev: // room in the buffer: the usual case, and cheaper than the select below
	default:
		select {
		case d.c.events <- ev:
		case <-d.c.ctx.Done():
			return false
		}
	}
	p.last = ev.Seq
	d.c.st.delivered.Add(1)
	return true
}

// emitPage delivers a history page's events that follow the position p.
// It stops at a hole (an event that is not the next one: the store has not
// caught up there) and reports it; ok is false when the client stopped.
func (d *deliverer) emitPage(p *position, evs []Event) (hole, ok bool) {
	for _, ev := range evs {
		if ev.Seq <= p.last {
			continue
		}
		if ev.Seq != p.last+1 {
			return true, true
		}
		if !d.emit(ev, p) {
			return false, false
		}
	}
	return false, true
}

// page fetches the history of conv after its position p (retried on
// unavailable and connection loss until the client stops).
func (d *deliverer) page(conv string, p *position) ([]Event, bool, error) {
	d.c.st.historyPages.Add(1)
	return d.c.History(d.c.ctx, conv, p.last, 0, historyPage)
}

// catchUp delivers what the history holds after conv's position p, until
// the server says there is no more. False when the client stopped.
func (d *deliverer) catchUp(conv string, p *position) bool {
	for {
		evs, more, err := d.page(conv, p)
		if err != nil {
			if d.c.ctx.Err() != nil {
				return false
			}
			// forbidden/not_found also mean that the store has not seen the
			// conversation yet (just created): the position stays, and the
			// next push or reconnect tries again.
			d.c.log.Debug("catch-up failed", "conv", conv, "err", err)
			return true
		}
		hole, ok := d.emitPage(p, evs)
		if !ok {
			return false
		}
		if !more || hole || len(evs) == 0 {
			return true
		}
	}
}

// fill delivers the events of conv (at p) up to seq target from history,
// waiting with backoff while the store has not caught up with the push
// that revealed the gap: a gap is filled, never skipped. False when the
// client stopped, or for a conversation the server will not serve —
// bad_request at once, forbidden after maxForbidden tries (the store may
// not have the membership yet; past that, the user was removed) — which is
// then no longer tracked.
func (d *deliverer) fill(conv string, p *position, target int64) bool {
	forbidden := 0
	for waits := 0; p.last < target; {
		before := p.last
		evs, _, err := d.page(conv, p)
		if err != nil {
			if d.c.ctx.Err() != nil {
				return false
			}
			if IsCode(err, CodeForbidden) {
				forbidden++
			}
			if IsCode(err, CodeBadRequest) || forbidden > maxForbidden {
				d.c.log.Warn("cannot fill a gap; the conversation is no longer tracked", "conv", conv, "err", err)
				delete(d.convs, conv)
				return false
			}
		} else if _, ok := d.emitPage(p, evs); !ok {
			return false
		}
		if p.last > before {
			waits = 0
			continue
		}
		// No progress: the store lags behind the push (or refused for the
		// same reason). Wait and ask again.
		if waits > 0 && waits%10 == 0 {
			d.c.log.Warn("still waiting for the history to fill a gap", "conv", conv, "have", p.last, "want", target, "err", err)
		}
		if !sleepCtx(d.c.ctx, d.c.backoff(waits)) {
			return false
		}
		waits++
	}
	return true
}
