package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
)

// Benchmarks of real-time delivery on one `parley dev` process, with
// clients over real loopback sockets. Run them one iteration each:
//
//	go test ./e2e -run '^$' -bench 'Realtime|IdleConn' -benchtime 1x -timeout 20m
//
// The clients run in the benchmark's own process, on the same cores as the
// server, so the figures are those of the machine as a whole; the
// server-cpu-cores and bench-cpu-cores metrics say how the CPU was shared.

const (
	// rtbPairs is the number of sender/receiver pairs, each pair its own
	// direct conversation and each user its own connection, unless
	// PARLEY_BENCH_RT_PAIRS says otherwise.
	rtbPairs = 200
	// rtbWindow is how many sends each sender keeps in flight, unless
	// PARLEY_BENCH_RT_WINDOW says otherwise.
	rtbWindow = 4
	// rtbMsgsLimited and rtbMsgsUnlimited are the number of messages each
	// sender sends under the default limits and without limits (each
	// about 15s on 2 cores), unless PARLEY_BENCH_RT_MSGS says otherwise.
	rtbMsgsLimited   = 300
	rtbMsgsUnlimited = 1000
	// rtbTimeout bounds every wait of the benchmarks.
	rtbTimeout = 3 * time.Minute

	// idleConns is the number of idle authenticated connections;
	// idleDevices of them per user (under --max-conns-per-user 16).
	idleConns   = 10_000
	idleDevices = 10
	// idleDialers bounds the dials in progress, so the accept backlog is
	// never overrun.
	idleDialers = 50
)

// envInt returns the environment variable name as a positive number, or
// def when it is not set.
func envInt(b *testing.B, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", name, s)
		}
		return n
	}
	return def
}

// benchDev is a `parley dev` process started by a benchmark.
type benchDev struct {
	tb     testing.TB
	cmd    *exec.Cmd
	public string // host:port of the public (WebSocket) listener
}

// startBenchDev starts `parley dev` on a fresh data dir with the token
// secret rtTokenSecret and extra flags, and waits for it to print its
// addresses. It is killed when the benchmark ends if still running.
func startBenchDev(tb testing.TB, extra ...string) *benchDev {
	tb.Helper()
	args := append([]string{"--data-dir", filepath.Join(tb.TempDir(), "data"), "--broker-listen", "127.0.0.1:0",
		"--listen", "127.0.0.1:0", "--log-level", "warn", "--token-secret", rtTokenSecret}, extra...)
	cmd := exec.Command(parleyBin, args...)
	if v := os.Getenv("PARLEY_BENCH_DEV_GODEBUG"); v != "" {
		// For investigating: e.g. gctrace=1 to see the server's heap.
		cmd.Env = append(os.Environ(), "GODEBUG="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	d := &benchDev{tb: tb, cmd: cmd}
	tb.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	found := make(chan string, 1)
	go func() {
		var public string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() { // read to the end, so the child never blocks on stdout
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "public" {
				public = strings.TrimSuffix(strings.TrimPrefix(f[1], "ws://"), "/v1/ws")
			}
			if strings.HasPrefix(sc.Text(), "Stop with") {
				found <- public
			}
		}
	}()
	select {
	case d.public = <-found:
	case <-time.After(60 * time.Second):
		tb.Fatal("parley dev printed no addresses within 60s")
	}
	if d.public == "" {
		tb.Fatal("parley dev printed no public address")
	}
	return d
}

// stop ends the process with SIGINT and waits for a clean exit.
func (d *benchDev) stop() {
	d.tb.Helper()
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		d.tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			d.tb.Errorf("parley dev exited with %v after SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
		d.tb.Errorf("parley dev did not stop within 30s of SIGINT")
	}
}

// rssKiB returns the process's resident set size (VmRSS) in KiB.
func (d *benchDev) rssKiB() int64 {
	d.tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	d.tb.Fatalf("no VmRSS in /proc/%d/status", d.cmd.Process.Pid)
	return 0
}

// cpu returns the CPU time (user + system) the process has used.
func (d *benchDev) cpu() time.Duration {
	d.tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		d.tb.Fatal(err)
	}
	// The fields after the command name (which may hold spaces) start at
	// field 3 (state); utime and stime are fields 14 and 15, in clock
	// ticks (USER_HZ, 100 on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		d.tb.Fatalf("short /proc/%d/stat: %q", d.cmd.Process.Pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		d.tb.Fatalf("bad /proc/%d/stat: %q", d.cmd.Process.Pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// selfCPU returns the CPU time (user + system) this process has used.
func selfCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy returns the CPU time all the machine's cores have spent
// busy (not idle, not waiting for I/O), from /proc/stat.
func machineBusy(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("unexpected /proc/stat: %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			tb.Fatalf("unexpected /proc/stat: %q", line)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// percentile returns the p-th percentile (0..100) of sorted, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRealtimeDev measures delivery through one `parley dev` (8
// partitions): rtbPairs senders each send messages to their own receiver
// over a direct conversation, rtbWindow in flight per sender, with the
// send time in the body, and every receiver checks it got every message
// exactly once. Reported: msgs/s delivered end to end (messages received ÷
// time from the first send to the last receive); p50/p99/max latency from
// the send call to the receiver's event (waits and retries after
// rate_limited included); p50/p99 from the send call to its ack; the
// senders' retries; the receivers' gap fills; and the CPU used during the
// sends by the server, by this process (the clients) and by the machine's
// other processes, in cores.
//
// default-limits runs with the product's per-connection limit (20
// frames/s, burst 40: at most 4,000 msgs/s for 200 senders); unlimited
// lifts it to show what the pipeline itself does.
//
// PARLEY_BENCH_RT_PAIRS, PARLEY_BENCH_RT_WINDOW and PARLEY_BENCH_RT_MSGS
// change the pairs, the sends in flight per sender and the messages per
// sender; PARLEY_BENCH_RT_PACE paces each sender to that many sends per
// second on its own side, each at a random phase (default: unpaced);
// PARLEY_BENCH_DEV_GODEBUG sets GODEBUG for the server (e.g. gctrace=1).
func BenchmarkRealtimeDev(b *testing.B) {
	b.Run("default-limits", func(b *testing.B) {
		benchRealtime(b, rtbMsgsLimited, "--conn-rate", "20", "--conn-burst", "40")
	})
	b.Run("unlimited", func(b *testing.B) {
		benchRealtime(b, rtbMsgsUnlimited, "--conn-rate", "10000", "--conn-burst", "10000")
	})
}

// rtbBody is a benchmark message's body: when the send was called and the
// message's number.
type rtbBody struct {
	T int64 `json:"t"` // UnixNano
	I int   `json:"i"`
}

// rtbReceiver is a receiver's client and what it received.
type rtbReceiver struct {
	c    *client.Client
	user string
	done chan struct{}

	n atomic.Int64 // message events received
	// Read by the receiving goroutine only until done is closed.
	got    map[int]int // message number → times received
	lat    []time.Duration
	bad    []string       // unexpected events
	origin map[string]int // "conv from" → message events
}

func benchRealtime(b *testing.B, defaultMsgs int, limits ...string) {
	pairs := envInt(b, "PARLEY_BENCH_RT_PAIRS", rtbPairs)
	window := envInt(b, "PARLEY_BENCH_RT_WINDOW", rtbWindow)
	msgs := envInt(b, "PARLEY_BENCH_RT_MSGS", defaultMsgs)
	pace := envInt(b, "PARLEY_BENCH_RT_PACE", 0)
	dev := startBenchDev(b, append([]string{"--partitions", "8"}, limits...)...)
	url := wsURL(dev.public)
	dial := func(user string) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Dial(ctx, client.Config{
			URLs:   []string{url},
			Device: "d",
			Token: func(context.Context) (string, error) {
				return auth.Sign([]byte(rtTokenSecret), user, time.Hour, time.Now())
			},
			Logger: testLogger(b),
		})
	}
	// parallel runs f(0..n-1) with at most 50 at a time.
	parallel := func(n int, f func(i int) error) error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		sem := make(chan struct{}, 50)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errs[i] = f(i)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}

	var (
		delivered, want          int64
		elapsed                  time.Duration
		lats, acks               []time.Duration
		retries, gaps, histPages int64
		dups, overflows          int64
		reconnects               int64
		serverCPU, benchCPU      time.Duration
		otherCPU                 time.Duration // other processes of the machine
	)
	b.ResetTimer()
	for iter := range b.N {
		b.StopTimer()
		recv := make([]*rtbReceiver, pairs)
		senders := make([]*client.Client, pairs)
		convs := make([]string, pairs)
		var total, lastRecv, wantAll atomic.Int64
		allIn := make(chan struct{}) // closed when the last message is received
		var allInOnce sync.Once
		// Receivers first, so that each is online for its conversation's
		// first event.
		err := parallel(pairs, func(i int) error {
			user := fmt.Sprintf("r%d-%d", iter, i)
			c, err := dial(user)
			if err != nil {
				return fmt.Errorf("receiver %s: %w", user, err)
			}
			r := &rtbReceiver{c: c, user: user, done: make(chan struct{}), got: make(map[int]int), origin: make(map[string]int), lat: make([]time.Duration, 0, msgs)}
			recv[i] = r
			go func() {
				defer close(r.done)
				for ev := range c.Events() {
					now := time.Now()
					if ev.Type != "message" {
						if ev.Type != "created" {
							r.bad = append(r.bad, fmt.Sprintf("%s seq %d: type %q", ev.Conv, ev.Seq, ev.Type))
						}
						continue
					}
					var body rtbBody
					if err := json.Unmarshal(ev.Body, &body); err != nil {
						r.bad = append(r.bad, fmt.Sprintf("%s seq %d: body %s: %v", ev.Conv, ev.Seq, ev.Body, err))
						continue
					}
					r.lat = append(r.lat, now.Sub(time.Unix(0, body.T)))
					r.got[body.I]++
					r.origin[ev.Conv+" "+ev.From]++
					r.n.Add(1)
					if total.Add(1) == wantAll.Load() {
						allInOnce.Do(func() { close(allIn) })
					}
					for t := now.UnixNano(); ; {
						last := lastRecv.Load()
						if last >= t || lastRecv.CompareAndSwap(last, t) {
							break
						}
					}
				}
			}()
			return nil
		})
		if err == nil {
			err = parallel(pairs, func(i int) error {
				user := fmt.Sprintf("s%d-%d", iter, i)
				c, err := dial(user)
				if err != nil {
					return fmt.Errorf("sender %s: %w", user, err)
				}
				senders[i] = c
				go func() { // the sender's own devices get its messages too
					for range c.Events() {
					}
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				conv, err := c.Create(ctx, "direct", []string{recv[i].user}, "")
				if err != nil {
					return fmt.Errorf("sender %s: create: %w", user, err)
				}
				convs[i] = conv
				return nil
			})
		}
		closeAll := func() {
			for _, c := range senders {
				if c != nil {
					c.Close()
				}
			}
			for _, r := range recv {
				if r != nil {
					r.c.Close()
					<-r.done
				}
			}
		}
		if err != nil {
			closeAll()
			b.Fatal(err)
		}

		// The sends, timed.
		want = int64(pairs * msgs)
		wantAll.Store(want)
		cpu0, self0, busy0 := dev.cpu(), selfCPU(b), machineBusy(b)
		b.StartTimer()
		start := time.Now()
		sendCtx, cancelSends := context.WithTimeout(context.Background(), rtbTimeout)
		var sendErrs sync.Map
		var sendWG sync.WaitGroup
		ackLat := make([][]time.Duration, pairs)
		for i := range ackLat {
			ackLat[i] = make([]time.Duration, msgs)
		}
		for i, c := range senders {
			var next atomic.Int64
			var pacer *rate.Limiter // paces the sender's own sends, if set
			var phase time.Duration
			if pace > 0 {
				pacer = rate.NewLimiter(rate.Limit(pace), 1)
				// Each at its own phase, as independent users would be:
				// in step, the senders would arrive in batches.
				phase = time.Duration(rand.Int64N(int64(time.Second) / int64(pace)))
			}
			for range window {
				sendWG.Add(1)
				go func() {
					defer sendWG.Done()
					select { // this sender's phase
					case <-time.After(phase):
					case <-sendCtx.Done():
						return
					}
					for {
						k := int(next.Add(1) - 1)
						if k >= msgs {
							return
						}
						if pacer != nil {
							if err := pacer.Wait(sendCtx); err != nil {
								sendErrs.Store(fmt.Sprintf("sender %d message %d", i, k), err)
								return
							}
						}
						t0 := time.Now()
						body := rtbBody{T: t0.UnixNano(), I: k}
						if _, err := c.SendCMID(sendCtx, convs[i], fmt.Sprintf("m-%d", k), "text", body); err != nil {
							sendErrs.Store(fmt.Sprintf("sender %d message %d", i, k), err)
							return
						}
						ackLat[i][k] = time.Since(t0)
					}
				}()
			}
		}
		sendsDone := make(chan struct{})
		go func() { sendWG.Wait(); close(sendsDone) }()
		select {
		case <-allIn:
		case <-time.After(rtbTimeout): // counted as missing below
		}
		b.StopTimer()
		cpu1, self1, busy1 := dev.cpu(), selfCPU(b), machineBusy(b)
		wall := time.Since(start)
		serverCPU += cpu1 - cpu0
		benchCPU += self1 - self0
		otherCPU += (busy1 - busy0) - (cpu1 - cpu0) - (self1 - self0)
		select {
		case <-sendsDone:
		case <-time.After(rtbTimeout):
			b.Error("the sends did not end")
		}
		cancelSends()
		<-sendsDone
		for _, c := range senders {
			st := c.Stats()
			retries += st.Retries
			reconnects += st.Connects - 1
		}
		for _, r := range recv {
			st := r.c.Stats()
			reconnects += st.Connects - 1
			gaps += st.Gaps
			histPages += st.HistoryPages
			dups += st.Duplicates
			overflows += st.Overflows
		}
		closeAll()
		for _, l := range ackLat {
			acks = append(acks, l...)
		}

		sendErrs.Range(func(k, v any) bool {
			b.Errorf("%s: %v", k, v)
			return true
		})
		got := total.Load()
		delivered += got
		elapsed += time.Duration(lastRecv.Load() - start.UnixNano())
		for i, r := range recv {
			for _, s := range r.bad {
				b.Errorf("receiver %s: unexpected event: %s", r.user, s)
			}
			if wantOrigin := fmt.Sprintf("%s s%d-%d", convs[i], iter, i); len(r.origin) != 1 || r.origin[wantOrigin] != msgs {
				b.Errorf("receiver %s: message events by conversation and sender %v; want %d of %q", r.user, r.origin, msgs, wantOrigin)
			}
			var missing, twice []int
			for k := range msgs {
				switch n := r.got[k]; {
				case n == 0:
					missing = append(missing, k)
				case n > 1:
					twice = append(twice, k)
				}
			}
			if len(missing) > 0 || len(twice) > 0 || int(r.n.Load()) != msgs {
				b.Errorf("receiver %d (%s) got %d message events of %d: missing %v, more than once %v",
					i, r.user, r.n.Load(), msgs, summarizeInts(missing), summarizeInts(twice))
			}
			lats = append(lats, r.lat...)
		}
		if got != want {
			b.Fatalf("receivers got %d message events in %v; want %d", got, wall, want)
		}
	}
	b.StopTimer()
	dev.stop()

	slices.Sort(lats)
	slices.Sort(acks)
	secs := elapsed.Seconds()
	b.ReportMetric(float64(delivered)/secs, "msgs/s")
	b.ReportMetric(ms(percentile(lats, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lats, 99)), "p99-ms")
	b.ReportMetric(ms(lats[len(lats)-1]), "max-ms")
	b.ReportMetric(ms(percentile(acks, 50)), "ack-p50-ms")
	b.ReportMetric(ms(percentile(acks, 99)), "ack-p99-ms")
	b.ReportMetric(float64(retries)/float64(b.N), "retries")
	b.ReportMetric(float64(gaps)/float64(b.N), "gaps")
	b.ReportMetric(serverCPU.Seconds()/secs, "server-cpu-cores")
	b.ReportMetric(benchCPU.Seconds()/secs, "bench-cpu-cores")
	b.ReportMetric(max(otherCPU.Seconds(), 0)/secs, "other-cpu-cores")
	pacing := "unpaced"
	if pace > 0 {
		pacing = fmt.Sprintf("paced at %d/s", pace)
	}
	b.Logf("%d pairs × %d messages (%d in flight per sender, %s) × %d iteration(s): %d delivered in %.2fs; latency p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms; ack p50 %.1fms p99 %.1fms max %.1fms; "+
		"sender retries %d; reconnects %d; receivers: gaps %d, history pages %d, duplicate pushes %d, overflows %d; CPU: server %.1fs, benchmark process %.1fs, other processes %.1fs (%d cores)",
		pairs, msgs, window, pacing, b.N, delivered, secs, ms(percentile(lats, 50)), ms(percentile(lats, 90)), ms(percentile(lats, 99)), ms(lats[len(lats)-1]),
		ms(percentile(acks, 50)), ms(percentile(acks, 99)), ms(acks[len(acks)-1]),
		retries, reconnects, gaps, histPages, dups, overflows, serverCPU.Seconds(), benchCPU.Seconds(), otherCPU.Seconds(), runtime.NumCPU())
}

// summarizeInts shortens a long list for a failure message.
func summarizeInts(s []int) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprintf("%v ... %v (%d)", s[:10], s[len(s)-10:], len(s))
}

// BenchmarkIdleConnections measures the server memory of idle
// authenticated connections: the RSS of one `parley dev` before and after
// idleConns WebSocket connections (idleDevices per user) authenticate and
// stay idle. Only the server's RSS counts; the benchmark process holds the
// client ends.
func BenchmarkIdleConnections(b *testing.B) {
	var before, after int64
	var dialTime time.Duration
	for range b.N {
		b.StopTimer()
		dev := startBenchDev(b)
		url := wsURL(dev.public)
		before = settledRSS(b, dev)

		users := idleConns / idleDevices
		tokens := make([]string, users)
		for u := range tokens {
			tokens[u] = must(auth.Sign([]byte(rtTokenSecret), fmt.Sprintf("idle-%d", u), time.Hour, time.Now()))
		}
		conns := make([]*websocket.Conn, idleConns)
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		sem := make(chan struct{}, idleDialers)
		dialer := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
		b.StartTimer()
		start := time.Now()
		for i := range conns {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := idleDial(dialer, url, tokens[i/idleDevices], fmt.Sprintf("d%d", i%idleDevices))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}()
		}
		wg.Wait()
		dialTime = time.Since(start)
		b.StopTimer()
		// The server closes a connection silent for 60s: ping them all
		// now and then while measuring.
		stopPing := make(chan struct{})
		pingDone := make(chan struct{})
		go func() {
			defer close(pingDone)
			t := time.NewTicker(20 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopPing:
					return
				case <-t.C:
					for _, c := range conns {
						if c != nil {
							_ = c.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
						}
					}
				}
			}
		}()
		if firstErr == nil {
			after = settledRSS(b, dev)
		}
		close(stopPing)
		<-pingDone
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		if firstErr != nil {
			dev.stop()
			b.Fatal(firstErr)
		}
		dev.stop()
	}
	b.ReportMetric(float64(after-before)/idleConns, "KiB/conn")
	b.ReportMetric(float64(before)/1024, "rss-before-MiB")
	b.ReportMetric(float64(after)/1024, "rss-after-MiB")
	b.ReportMetric(idleConns/dialTime.Seconds(), "conns/s")
	b.Logf("%d connections (%d users × %d devices) dialed and authenticated in %v, %d at a time; server RSS %d KiB before, %d KiB after",
		idleConns, idleConns/idleDevices, idleDevices, dialTime.Round(time.Millisecond), idleDialers, before, after)
}

// idleDial opens a WebSocket connection and authenticates it.
func idleDial(d *websocket.Dialer, url, token, device string) (*websocket.Conn, error) {
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := c.WriteJSON(map[string]string{"op": "auth", "id": "1", "token": token, "device": device}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var reply struct {
		Op, ID, Code, Message string
	}
	if err := c.ReadJSON(&reply); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading the auth reply: %w", err)
	}
	if reply.Op != "auth_ok" || reply.ID != "1" {
		c.Close()
		return nil, fmt.Errorf("auth answered %+v", reply)
	}
	_ = c.SetReadDeadline(time.Time{})
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// settledRSS reads dev's RSS once a second until two readings in a row are
// within 1% of each other (at most 10 readings), and returns the last.
func settledRSS(b *testing.B, dev *benchDev) int64 {
	b.Helper()
	last := dev.rssKiB()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range 10 {
		<-tick.C
		now := dev.rssKiB()
		diff := now - last
		last = now
		if diff < 0 {
			diff = -diff
		}
		if diff*100 <= now {
			break
		}
	}
	return last
}
