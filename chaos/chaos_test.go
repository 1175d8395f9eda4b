package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/store/cassandrastore"
)

// settings of a run, from the environment (see the package doc).
type settings struct {
	duration time.Duration
	seed     uint64
	clients  int
	faults   []string
	report   string
}

func loadSettings(t *testing.T) settings {
	s := settings{duration: 90 * time.Second, seed: 1, clients: 200, faults: faultKinds, report: os.Getenv("PARLEY_CHAOS_REPORT")}
	if v := os.Getenv("PARLEY_CHAOS_FAULTS"); v != "" {
		s.faults = strings.Split(v, ",")
		for _, k := range s.faults {
			if !slices.Contains(faultKinds, k) {
				t.Fatalf("PARLEY_CHAOS_FAULTS: unknown fault %q; the kinds are %v", k, faultKinds)
			}
		}
	}
	if v := os.Getenv("PARLEY_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("PARLEY_CHAOS_DURATION=%q: want a duration like 10m", v)
		}
		s.duration = d
	}
	if v := os.Getenv("PARLEY_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PARLEY_CHAOS_SEED=%q: want a number", v)
		}
		s.seed = n
	}
	if v := os.Getenv("PARLEY_CHAOS_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 80 || n > 5000 {
			t.Fatalf("PARLEY_CHAOS_CLIENTS=%q: want 80..5000", v)
		}
		s.clients = n
	}
	return s
}

// Report is what a run prints (and writes as JSON with PARLEY_CHAOS_REPORT).
type Report struct {
	Seed            uint64            `json:"seed"`
	Duration        string            `json:"duration"`
	Clients         int               `json:"clients"`
	Sent            int               `json:"sent"`
	Acked           int               `json:"acked"`
	Unanswered      int               `json:"unanswered"`
	InLogUnacked    int               `json:"in_log_unacked"`
	Events          int               `json:"events"`
	Delivered       int64             `json:"delivered"`
	MemberChanges   int64             `json:"member_changes"`
	Faults          map[string]int    `json:"faults"`
	Violations      map[string]int    `json:"violations"`
	SlowestRecovery string            `json:"slowest_recovery"`
	SlowestAfter    string            `json:"slowest_recovery_after"`
	Client          map[string]int64  `json:"client_stats"`
	Recoveries      map[string]string `json:"recoveries"`
	// ExitedByItself counts, per process, the runs that ended without a
	// fault (or the end of the test) signaling them.
	ExitedByItself map[string]int `json:"exited_by_itself,omitempty"`
}

// TestChaos is the chaos run: the cluster, the clients, the fault loop for
// the run's duration, then the checker. Any violation fails it.
func TestChaos(t *testing.T) {
	s := loadSettings(t)
	t.Logf("chaos run: seed %d, %v of faults (%s), %d clients", s.seed, s.duration, strings.Join(s.faults, ", "), s.clients)
	dir := t.TempDir()
	c := startCluster(t, dir)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.tail(4000))
			}
		}
	})
	l := startLoad(t, c, s.clients)
	t.Logf("%d devices of %d users, %d static conversations and the churn group %s", len(l.devices), len(l.users), len(l.static), l.churn)

	started := time.Now()
	ctx, stop := context.WithTimeout(context.Background(), s.duration)
	defer stop()
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		l.run(ctx, s.seed, 1, s.duration/time.Duration(len(l.joiners)+1))
	}()
	f := newFaults(t, c, s.seed, s.faults)
	f.run(ctx)
	t.Logf("faults over after %v; waiting for the last sends", time.Since(started).Round(time.Millisecond))

	// Heal: every process up, Cassandra up, no broker faults left pending
	// (each had a bounded count or deadline).
	for _, p := range c.procs {
		if !p.running() {
			t.Logf("%s is down at the end of the run (it exited by itself): starting it", p.name)
			p.start()
		}
	}
	<-sending
	ran := time.Since(started)

	// Quiesce: the sequencer has every command, the writer every event.
	topics := c.kc.Topics()
	testutil.WaitFor(t, 3*time.Minute, "the sequencers to consume every command", func() bool {
		return c.groupCaughtUp("parley-sequencer", topics.Commands)
	})
	testutil.WaitFor(t, 3*time.Minute, "the writers to store every event", func() bool {
		return c.groupCaughtUp("parley-writer", topics.Events)
	})
	caughtUp := time.Now()
	for _, err := range l.catchUp(3 * time.Minute) {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("every device caught up in %v", time.Since(caughtUp).Round(time.Millisecond))
	stats := l.stats()
	l.close()

	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lv, err := readLog(rctx, c.kc)
	if err != nil {
		t.Fatal(err)
	}
	v := newVerdict()
	checkLog(v, lv, l.sends)
	checkDevices(v, lv, l)
	st, err := cassandrastore.Open(c.cassCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := checkStore(rctx, v, lv, st); err != nil {
		t.Fatal(err)
	}

	rep := report(s, ran, l, stats, lv, f, v)
	for _, p := range c.procs {
		if n := p.exitedByItself(); n > 0 {
			if rep.ExitedByItself == nil {
				rep.ExitedByItself = map[string]int{}
			}
			rep.ExitedByItself[p.name] = n
		}
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Printf("chaos report:\n%s\nfault log:\n  %s\nchecker:\n%s", out, strings.Join(f.log, "\n  "), v)
	if s.report != "" {
		if err := os.WriteFile(s.report, append(out, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}
	if n := v.total(); n > 0 {
		t.Errorf("the checker found %d violations (seed %d)", n, s.seed)
	}
}

func report(s settings, ran time.Duration, l *load, stats []client.Stats, lv *logView, f *faults, v *verdict) Report {
	r := Report{
		Seed: s.seed, Duration: ran.Round(time.Second).String(), Clients: len(l.devices), Events: lv.events,
		MemberChanges: l.memberOps.Load(), Faults: f.counts, Violations: map[string]int{},
		Client: map[string]int64{}, Recoveries: map[string]string{},
	}
	inLog := map[cmidKey]bool{}
	for _, evs := range lv.byConv {
		for _, ev := range evs {
			if ev.Cmid != "" {
				inLog[cmidKey{ev.Conv, ev.From, ev.Cmid}] = true
			}
		}
	}
	for _, snd := range l.sends {
		r.Sent++
		switch {
		case snd.acked:
			r.Acked++
		default:
			r.Unanswered++
			if inLog[cmidKey{snd.conv, snd.from, snd.cmid}] {
				r.InLogUnacked++
			}
		}
	}
	for _, rule := range rules {
		r.Violations[rule] = v.counts[rule]
	}
	for _, st := range stats {
		r.Delivered += st.Delivered
		r.Client["connects"] += st.Connects
		r.Client["retries"] += st.Retries
		r.Client["gaps"] += st.Gaps
		r.Client["history_pages"] += st.HistoryPages
		r.Client["duplicates_dropped"] += st.Duplicates
	}
	recs := recoveries(lv, l, f.gone)
	for _, rc := range recs {
		fmt.Printf("recovery: %-28s at %6.1fs: every conversation delivered again after %v (slowest: %s)\n",
			rc.what, rc.at.Sub(f.start).Seconds(), rc.took.Round(time.Millisecond), rc.conv)
	}
	if len(recs) > 0 {
		r.SlowestRecovery = recs[0].took.Round(time.Millisecond).String()
		r.SlowestAfter = recs[0].what
	}
	// The slowest per kind of process.
	for _, rc := range recs {
		kind := rc.what
		if i := strings.LastIndex(kind, "-"); i > 0 {
			kind = kind[:i]
		}
		if _, ok := r.Recoveries[kind]; !ok {
			r.Recoveries[kind] = rc.took.Round(time.Millisecond).String()
		}
	}
	return r
}
