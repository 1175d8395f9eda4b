package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// A run's throughput is only worth its name if the server kept up with it.
// When sends are acked faster than their deliveries go out, the messages
// waiting to be delivered pile up: the latency grows for as long as the
// run lasts, and the deliveries catch up only after the sending stops
// (which the run's rate, counted to the last delivery, then includes).
// The trend tells such a run apart by the latency of the deliveries made
// in the second quarter of the sending and of those made in its last
// quarter (the first quarter includes the start, and what comes after the
// sending is the catching up).

// Falling behind: the late median is more than fallBehindRatio times the
// early one, and more than fallBehindMin above it (a few milliseconds'
// wobble at a low latency is no trend). A latency that grows in
// proportion to the time gives a ratio of about 2.3.
const (
	fallBehindRatio = 1.5
	fallBehindMin   = 100 * time.Millisecond
)

// Trend compares the send → receive latency of the deliveries made early
// and late in the sending (milliseconds).
type Trend struct {
	EarlyP50   float64 `json:"early_p50_ms"` // deliveries in the second quarter of the sending
	LateP50    float64 `json:"late_p50_ms"`  // in its last quarter
	EarlyCount int64   `json:"early_count"`
	LateCount  int64   `json:"late_count"`
	// WhileSending is the rate of the deliveries made while the sends
	// lasted, in the run's unit: the rate the run sustained when it kept
	// up, more than it sustained when it did not.
	WhileSending float64 `json:"while_sending"`
	// Sustained is false when the deliveries fell behind the sends: the
	// late median more than 1.5 times the early one and 100 ms above it.
	Sustained bool `json:"sustained"`
}

func (tr *Trend) describe(unit string) string {
	verdict := "sustained"
	if !tr.Sustained {
		verdict = "NOT SUSTAINED, deliveries fell behind the sends"
	}
	return fmt.Sprintf("%s: p50 %.2fms for the deliveries in the second quarter of the sending, %.2fms in the last (%d and %d samples); %s %s while sending",
		verdict, tr.EarlyP50, tr.LateP50, tr.EarlyCount, tr.LateCount, human(tr.WhileSending), unit)
}

// trendShards spreads the receivers' records over this many locks.
const trendShards = 16

// trendRecorder collects the latencies a Trend compares, from many
// goroutines at once.
type trendRecorder struct {
	start, early, mid, late, end int64 // Unix ns: early is [early, mid), late is [late, end)
	shards                       [trendShards]trendShard
}

type trendShard struct {
	mu          sync.Mutex
	early, late *hdrhistogram.Histogram
	sending     atomic.Int64 // deliveries made while the sends lasted
	_           [32]byte     // keeps shards off each other's cache lines
}

// newTrendRecorder is for a sending from start for d.
func newTrendRecorder(start time.Time, d time.Duration) *trendRecorder {
	t0 := start.UnixNano()
	tr := &trendRecorder{start: t0, early: t0 + int64(d/4), mid: t0 + int64(d/2), late: t0 + int64(d*3/4), end: t0 + int64(d)}
	for i := range tr.shards {
		tr.shards[i].early, tr.shards[i].late = newHist(), newHist()
	}
	return tr
}

// record adds the latency d of a delivery made at (Unix ns), if it falls
// in one of the two quarters, to shard (any int).
func (tr *trendRecorder) record(shard int, at int64, d time.Duration) {
	s := &tr.shards[uint(shard)%trendShards]
	if at >= tr.start && at < tr.end {
		s.sending.Add(1)
	}
	var early bool
	switch {
	case at >= tr.early && at < tr.mid:
		early = true
	case at >= tr.late && at < tr.end:
	default:
		return
	}
	us := min(max(int64(d/time.Microsecond), histMin), histMax)
	s.mu.Lock()
	if early {
		_ = s.early.RecordValue(us)
	} else {
		_ = s.late.RecordValue(us)
	}
	s.mu.Unlock()
}

// trend is what was recorded; nil if either quarter has nothing.
func (tr *trendRecorder) trend() *Trend {
	early, late := newHist(), newHist()
	var sending int64
	for i := range tr.shards {
		s := &tr.shards[i]
		s.mu.Lock()
		early.Merge(s.early)
		late.Merge(s.late)
		s.mu.Unlock()
		sending += s.sending.Load()
	}
	t := judgeTrend(early, late)
	if t != nil {
		t.WhileSending = float64(sending) / (time.Duration(tr.end - tr.start).Seconds())
	}
	return t
}

// judgeTrend compares two latency distributions (microseconds).
func judgeTrend(early, late *hdrhistogram.Histogram) *Trend {
	if early.TotalCount() == 0 || late.TotalCount() == 0 {
		return nil
	}
	e, l := early.ValueAtQuantile(50), late.ValueAtQuantile(50)
	behind := float64(l) > fallBehindRatio*float64(e) && time.Duration(l-e)*time.Microsecond > fallBehindMin
	return &Trend{
		EarlyP50: float64(e) / 1000, LateP50: float64(l) / 1000,
		EarlyCount: early.TotalCount(), LateCount: late.TotalCount(),
		Sustained: !behind,
	}
}
