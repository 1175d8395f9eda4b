package bench

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// progress samples a run once a second: it adds a timeline point (the
// count and the latencies recorded in that second) and prints a line.
type progress struct {
	cfg   Config
	start time.Time
	rec   *recorder
	extra func() string // more to print, or nil

	stopOnce sync.Once
	quit     chan struct{}
	done     chan struct{}
	points   []Point
	tty      bool
}

func newProgress(cfg Config, start time.Time, rec *recorder, extra func() string) *progress {
	p := &progress{cfg: cfg, start: start, rec: rec, extra: extra, quit: make(chan struct{}), done: make(chan struct{})}
	if f, ok := cfg.Progress.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastCount int64
	lastT := p.start
	sample := func(now time.Time) {
		h := p.rec.interval()
		n := p.rec.count.Load()
		secs := now.Sub(lastT).Seconds()
		pt := Point{T: now.Sub(p.start).Seconds(), Rate: float64(n-lastCount) / secs}
		if h.TotalCount() > 0 {
			pt.P50, pt.P99, pt.Max = float64(h.ValueAtQuantile(50))/1000, float64(h.ValueAtQuantile(99))/1000, float64(h.Max())/1000
		}
		p.points = append(p.points, pt)
		lastCount, lastT = n, now
		p.print(pt, n)
	}
	for {
		select {
		case <-p.quit:
			// The last, partial interval, if anything happened in it.
			if now := time.Now(); p.rec.count.Load() > lastCount && now.Sub(lastT) >= 10*time.Millisecond {
				sample(now)
			}
			return
		case now := <-tick.C:
			sample(now)
		}
	}
}

func (p *progress) print(pt Point, total int64) {
	if p.cfg.Progress == nil {
		return
	}
	line := fmt.Sprintf("%s %5.0fs  %d in all, %.0f/s", p.cfg.Scenario, pt.T, total, pt.Rate)
	if pt.P99 > 0 {
		line += fmt.Sprintf("  p50 %.1fms p99 %.1fms", pt.P50, pt.P99)
	}
	if p.extra != nil {
		line += "  " + p.extra()
	}
	if p.tty {
		fmt.Fprintf(p.cfg.Progress, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.cfg.Progress, line)
	}
}

// stop ends the sampling and returns the timeline.
func (p *progress) stop() []Point {
	p.stopOnce.Do(func() { close(p.quit) })
	<-p.done
	if p.tty && p.cfg.Progress != nil {
		fmt.Fprintln(p.cfg.Progress)
	}
	return p.points
}
