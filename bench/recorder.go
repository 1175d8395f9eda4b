package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 10 minutes, to 3
// significant figures.
const (
	histMin     = 1
	histMax     = int64(10 * time.Minute / time.Microsecond)
	histSigFigs = 3
	// recShards spreads concurrent recorders over this many locks.
	recShards = 64
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFigs) }

// recorder collects latencies (an HDR histogram of the whole run, and one
// per interval for the timeline) and counts, from many goroutines at
// once. Each goroutine records into the shard it names, so they rarely
// share a lock.
type recorder struct {
	shards [recShards]recShard
	count  atomic.Int64 // values recorded
	last   atomic.Int64 // Unix ns of the last record
	errs   errList
}

// recShard holds the values of the current interval (cur) and those of
// the intervals before it (total): a value is recorded once, into cur,
// and moves into total when its interval ends.
type recShard struct {
	mu         sync.Mutex
	total, cur *hdrhistogram.Histogram
	_          [40]byte // keeps shards off each other's cache lines
}

func newRecorder() *recorder {
	r := &recorder{}
	for i := range r.shards {
		r.shards[i].total, r.shards[i].cur = newHist(), newHist()
	}
	return r
}

// record adds one latency d, measured at now, to shard (any int; taken
// modulo the shards).
func (r *recorder) record(shard int, now time.Time, d time.Duration) {
	us := max(int64(d/time.Microsecond), histMin)
	s := &r.shards[uint(shard)%recShards]
	s.mu.Lock()
	// Values past the top are recorded as the top: the run then shows a
	// 10-minute latency instead of losing the value.
	_ = s.cur.RecordValue(min(us, histMax))
	s.mu.Unlock()
	r.count.Add(1)
	r.last.Store(now.UnixNano())
}

// lastAt returns when the last value was recorded (zero if none was).
func (r *recorder) lastAt() time.Time {
	if ns := r.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// interval returns the values recorded since the last call, merged, and
// starts a new interval.
func (r *recorder) interval() *hdrhistogram.Histogram {
	h := newHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.cur)
		s.total.Merge(s.cur)
		s.cur.Reset()
		s.mu.Unlock()
	}
	return h
}

// total returns every value recorded, merged.
func (r *recorder) total() *hdrhistogram.Histogram {
	h := newHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.total)
		h.Merge(s.cur)
		s.mu.Unlock()
	}
	return h
}

// errList keeps the first errors of a run and counts them all.
type errList struct {
	mu    sync.Mutex
	first []string
	n     int64
}

const keepErrors = 20

func (e *errList) add(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.first) < keepErrors {
		e.first = append(e.first, msg)
	}
}

func (e *errList) snapshot() (first []string, n int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.first...), e.n
}
