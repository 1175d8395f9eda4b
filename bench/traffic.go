package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/client"
)

// traffic is a messaging run: senders each sending to one conversation,
// and receivers checking every event they are delivered. A message's cmid
// is its number (base 36) among its sender's messages; its body carries
// the time it was meant to be sent.
type traffic struct {
	cfg   Config
	rig   *rig
	rec   *recorder                     // send → receive, deliveries to others than the sender
	acks  *recorder                     // send → ack
	trend atomic.Pointer[trendRecorder] // set when the sending starts
	users map[string]int                // sender user → index in senders

	senders   []*sender
	receivers []*receiver

	own     atomic.Int64 // deliveries to the sender's own device
	sendErr errList
	tail    []byte    // every body after its send time: the padding text, and the closing brace
	base    time.Time // the origin of now
}

// sender is one client sending to one conversation.
type sender struct {
	idx  int
	user string
	c    *client.Client
	conv string

	mu    sync.Mutex
	acked bitset // message numbers acked
	n     int64  // acked
	tried atomic.Int64
}

// receiver is one client's checks of what it was delivered.
type receiver struct {
	idx  int
	user string
	c    *client.Client
	done chan struct{} // closed when its events have ended

	// Owned by the receiving goroutine until done is closed.
	last map[string]*int64 // conv → last seq delivered
	got  []bitset          // sender index → message numbers delivered
	n    atomic.Int64      // message events delivered
}

type bitset []uint64

func (b *bitset) set(i int64) (was bool) {
	w := int(i / 64)
	for len(*b) <= w {
		*b = append(*b, 0)
	}
	m := uint64(1) << (i % 64)
	was = (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) has(i int64) bool {
	w := int(i / 64)
	return w < len(b) && b[w]&(uint64(1)<<(i%64)) != 0
}

func newTraffic(cfg Config, r *rig) *traffic {
	return &traffic{cfg: cfg, rig: r, rec: newRecorder(), acks: newRecorder(), users: map[string]int{},
		tail: bodyTail(cfg.BodySize), base: time.Now()}
}

// bodyTail is what follows a body's send time: the padding text of size
// bytes, and the closing brace.
func bodyTail(size int) []byte {
	text, _ := json.Marshal(strings.Repeat("x", size)) // a string always encodes
	return append(append([]byte(`,"text":`), text...), '}')
}

// now is the time, as the traffic's creation plus the monotonic time since:
// half the cost of time.Now, which the tool pays for every delivery, and
// a step of the wall clock during the run does not move it.
func (t *traffic) now() time.Time { return t.base.Add(time.Since(t.base)) }

// addReceiver starts checking c's events.
func (t *traffic) addReceiver(user string, c *client.Client) *receiver {
	r := t.newReceiver(user, c)
	go t.receive(r)
	return r
}

func (t *traffic) newReceiver(user string, c *client.Client) *receiver {
	r := &receiver{idx: len(t.receivers), user: user, c: c, done: make(chan struct{}), last: map[string]*int64{}}
	t.receivers = append(t.receivers, r)
	return r
}

func (t *traffic) addSender(user string, c *client.Client, conv string) {
	t.users[user] = len(t.senders)
	t.senders = append(t.senders, &sender{idx: len(t.senders), user: user, c: c, conv: conv})
}

// receive checks each event r's client delivers: seqs of each
// conversation 1, 2, 3… with nothing missing or repeated, and each
// message of a known sender delivered once.
func (t *traffic) receive(r *receiver) {
	defer close(r.done)
	for ev := range r.c.Events() {
		t.deliver(r, ev, t.now())
	}
}

// deliver checks one event delivered to r at now.
func (t *traffic) deliver(r *receiver, ev client.Event, now time.Time) {
	last := r.last[ev.Conv]
	if last == nil {
		last = new(int64)
		r.last[ev.Conv] = last
	}
	if want := *last + 1; ev.Seq != want {
		t.rec.errs.add(fmt.Sprintf("%s got seq %d of %s after %d", r.user, ev.Seq, ev.Conv, want-1))
	}
	*last = ev.Seq
	if ev.Type != "message" {
		return
	}
	si, ok := t.users[ev.From]
	k, err := strconv.ParseInt(ev.CMID, 36, 64)
	if !ok || err != nil || k < 0 {
		t.rec.errs.add(fmt.Sprintf("%s got a message of %s from %s, cmid %q, that nobody sent", r.user, ev.Conv, ev.From, ev.CMID))
		return
	}
	for len(r.got) <= si {
		r.got = append(r.got, nil)
	}
	if r.got[si].set(k) {
		t.rec.errs.add(fmt.Sprintf("%s got message %s/%s twice (seq %d of %s)", r.user, ev.From, ev.CMID, ev.Seq, ev.Conv))
		return
	}
	r.n.Add(1)
	if ev.From == r.user {
		t.own.Add(1)
		return
	}
	sent, ok := sentAt(ev.Body)
	if !ok {
		t.rec.errs.add(fmt.Sprintf("%s: message %s/%s has a body not sent by this tool: %.60s", r.user, ev.From, ev.CMID, ev.Body))
		return
	}
	d := now.Sub(time.Unix(0, sent))
	t.rec.record(r.idx, now, d)
	if tr := t.trend.Load(); tr != nil {
		tr.record(r.idx, now.UnixNano(), d)
	}
}

// sentAt reads the send time from a body {"t":N,...}.
func sentAt(body []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(body, []byte(`{"t":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}

// run sends for cfg.Duration: at cfg.Rate messages/s in all, each sender
// on its own schedule at a random phase (latency then counts from the
// time a message was meant to be sent, so a stall delays every later
// message's count too), or with no rate each sender keeping cfg.Window
// sends in flight. It returns when every send has ended.
func (t *traffic) run(ctx context.Context, start time.Time) {
	end := start.Add(t.cfg.Duration)
	var interval time.Duration // between one sender's messages
	if t.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(len(t.senders)) / t.cfg.Rate)
	}
	window := t.cfg.Window
	if t.cfg.Rate > 0 {
		// Enough in flight for the schedule to be kept while acks take
		// up to a second.
		window = max(window, int(time.Second/max(interval, time.Millisecond))+1)
	}
	var wg sync.WaitGroup
	for _, s := range t.senders {
		var next atomic.Int64
		phase := time.Duration(0)
		if interval > 0 {
			phase = time.Duration(rand.Int64N(int64(interval)))
		}
		for range window {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					k := next.Add(1) - 1
					at := t.now()
					if interval > 0 {
						at = start.Add(phase + time.Duration(k)*interval)
						if !at.Before(end) {
							return
						}
						if d := time.Until(at); d > 0 {
							select {
							case <-time.After(d):
							case <-ctx.Done():
								return
							}
						}
					} else if !at.Before(end) {
						return
					}
					t.send(ctx, s, k, at)
				}
			}()
		}
	}
	wg.Wait()
}

// send sends message k of s, meant to be sent at at.
func (t *traffic) send(ctx context.Context, s *sender, k int64, at time.Time) {
	s.tried.Add(1)
	cmid := strconv.FormatInt(k, 36)
	_, err := s.c.SendCMID(ctx, s.conv, cmid, "text", rawJSON(t.body(at.UnixNano())))
	if err != nil {
		if ctx.Err() == nil {
			t.sendErr.add(fmt.Sprintf("%s message %s: %v", s.user, cmid, err))
		}
		return
	}
	now := t.now()
	t.acks.record(s.idx, now, now.Sub(at))
	s.mu.Lock()
	s.acked.set(k)
	s.n++
	s.mu.Unlock()
}

// body is the body of a message meant to be sent at (Unix ns):
// {"t":at,"text":"xx..."}, built without fmt, which took a tenth of the
// tool's CPU in dm.
func (t *traffic) body(at int64) []byte {
	b := make([]byte, 0, len(`{"t":`)+20+len(t.tail))
	return append(strconv.AppendInt(append(b, `{"t":`...), at, 10), t.tail...)
}

// rawJSON is a body already encoded.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

// want returns how many message events r should be delivered: those acked
// by the senders in its conversations.
func (t *traffic) want(r *receiver, sendersOf func(*receiver) []*sender) int64 {
	var n int64
	for _, s := range sendersOf(r) {
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// check compares what each receiver got with what its senders had acked,
// after the receivers have stopped.
func (t *traffic) check(sendersOf func(*receiver) []*sender) {
	for _, r := range t.receivers {
		for _, s := range sendersOf(r) {
			var got bitset
			if s.idx < len(r.got) {
				got = r.got[s.idx]
			}
			var missing []int64
			s.mu.Lock()
			for w, word := range s.acked {
				for bit := 0; bit < 64; bit++ {
					if word&(1<<bit) != 0 {
						if k := int64(w*64 + bit); !got.has(k) {
							missing = append(missing, k)
						}
					}
				}
			}
			s.mu.Unlock()
			if len(missing) > 0 {
				t.rec.errs.add(fmt.Sprintf("%s never got %d acked messages of %s (first numbers %v)", r.user, len(missing), s.user, missing[:min(len(missing), 5)]))
			}
		}
		if r.c == nil {
			continue
		}
		st := r.c.Stats()
		if st.Overflows > 0 {
			t.rec.errs.add(fmt.Sprintf("%s: %d pushes overflowed the client's queue", r.user, st.Overflows))
		}
	}
}
