package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// An idle run with more connections than one process can hold open (each
// is a file descriptor, in the server and in the client) is spread over
// several processes: the `parley dev` it starts and `parley connector`
// nodes beside it, on the dev's broker, each with an embedded store of its
// own; and as many worker processes of this tool (`parley bench idle
// --worker`), each holding one node's share of the connections. The
// server memory per connection is then the growth of all the servers'
// RSS over all the connections.
//
// A worker talks to the run on its standard streams, one JSON object
// (workerReport) per line on its output: the connections open so far,
// once a second; a ready report when its share is open; and, once its
// input is closed, a done report with the checks of the connections,
// which it then closes.

// workerReport is one line a worker writes.
type workerReport struct {
	Open int64 `json:"open"` // connections open so far

	// Ready: every connection of the share is open.
	Ready bool `json:"ready,omitempty"`
	// Hist is the connect + authenticate latencies (µs), as an HDR
	// histogram's compressed, base64 encoding.
	Hist string `json:"hist,omitempty"`
	// Nodes counts the connections by the node id they authenticated at.
	Nodes map[string]int64 `json:"nodes,omitempty"`

	// Done: the held connections were checked; the errors are these.
	Done       bool     `json:"done,omitempty"`
	Errors     []string `json:"errors,omitempty"`
	ErrorCount int64    `json:"error_count,omitempty"`
	RSSKiB     int64    `json:"rss_kib,omitempty"` // the worker's own

	// Failed: the share could not be opened, for this reason.
	Failed string `json:"failed,omitempty"`
}

// spreadProcesses returns how many server processes (and client
// processes) an idle run of cfg spreads over.
func spreadProcesses(cfg Config) int {
	return (cfg.Clients + cfg.ConnsPerProcess - 1) / cfg.ConnsPerProcess
}

// IdleWorker is one worker process of a spread idle run: it opens
// cfg.Clients connections to cfg.Target, numbered from cfg.FirstClient,
// reports on out, holds them until in ends, checks them and closes them.
func IdleWorker(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	cfg.Scenario = "idle"
	cfg = Defaults(cfg)
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.Target == "" {
		return fmt.Errorf("a worker needs the --target its connections go to")
	}
	if cfg.Clients > cfg.ConnsPerProcess {
		return fmt.Errorf("a worker holds at most %d connections (--conns-per-process), not %d", cfg.ConnsPerProcess, cfg.Clients)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	report := func(r workerReport) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(r)
	}
	rg, err := newRig(ctx, cfg)
	if err != nil {
		return err
	}
	rec := newRecorder()
	var open atomic.Int64
	stop := make(chan struct{})
	ticking := make(chan struct{})
	go func() {
		defer close(ticking)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = report(workerReport{Open: open.Load()})
			}
		}
	}()
	clients, err := openIdle(ctx, rg, cfg, rec, &open)
	defer closeAll(clients)
	close(stop)
	<-ticking
	if err != nil {
		err = fmt.Errorf("after %d connections: %w", open.Load(), err)
		_ = report(workerReport{Open: open.Load(), Failed: err.Error()})
		return err
	}
	hist, err := rec.total().Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return err
	}
	nodes := map[string]int64{}
	for _, c := range clients {
		nodes[c.Node()]++
	}
	if err := report(workerReport{Open: open.Load(), Ready: true, Hist: string(hist), Nodes: nodes}); err != nil {
		return err
	}
	// Hold until the run closes our input (or goes away).
	held := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, in)
		close(held)
	}()
	select {
	case <-held:
	case <-ctx.Done():
		return ctx.Err()
	}
	errs, n := checkIdle(clients, cfg.FirstClient)
	done := workerReport{Open: open.Load(), Done: true, Errors: errs, ErrorCount: n}
	if self, err := statusKiB("/proc/self/status", "VmRSS"); err == nil {
		done.RSSKiB = self
	}
	return report(done)
}

// worker is a worker process of this tool, as the run sees it.
type worker struct {
	n       int // its number, and its node's
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	reports chan workerReport // closed when its output ends
	done    chan error        // its exit, once
}

// startWorker starts worker n: `parley bench idle --worker` holding
// clients connections, numbered from first, to the node at public. The
// connections it reports open are added to opened as they come.
func startWorker(cfg Config, n int, public, secret string, clients, first int, opened *atomic.Int64) (*worker, error) {
	bin := cfg.ParleyBin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = exe
	}
	cmd := exec.Command(bin, "bench", "idle", "--worker", "--quiet",
		"--target", "ws://"+public+"/v1/ws", "--token-secret", secret,
		"--clients", strconv.Itoa(clients), "--first-client", strconv.Itoa(first),
		"--conns-per-process", strconv.Itoa(cfg.ConnsPerProcess))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &worker{n: n, cmd: cmd, stdin: stdin, reports: make(chan workerReport, 16), done: make(chan error, 1)}
	go func() {
		defer close(w.reports)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20) // a ready report carries a histogram
		var open int64
		for sc.Scan() {
			var r workerReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = workerReport{Failed: fmt.Sprintf("worker %d wrote %.80q: %v", n, sc.Bytes(), err)}
			}
			if r.Open > open {
				opened.Add(r.Open - open)
				open = r.Open
			}
			if r.Ready || r.Done || r.Failed != "" {
				w.reports <- r
			}
		}
		// The rest, so that the worker never blocks on a full pipe; then
		// its exit (Wait closes the pipe: not before all was read).
		_, _ = io.Copy(io.Discard, stdout)
		w.done <- cmd.Wait()
	}()
	return w, nil
}

// next returns the worker's next ready, done or failed report, or an
// error if it ends without one or ctx ends first.
func (w *worker) next(ctx context.Context) (workerReport, error) {
	select {
	case r, ok := <-w.reports:
		switch {
		case !ok:
			err := <-w.done
			w.done <- err
			return r, fmt.Errorf("worker %d ended without a report (%v)", w.n, err)
		case r.Failed != "":
			return r, fmt.Errorf("worker %d: %s", w.n, r.Failed)
		}
		return r, nil
	case <-ctx.Done():
		return workerReport{}, ctx.Err()
	}
}

// exit waits for the worker to exit, for at most a minute; an exit
// status other than 0 is an error.
func (w *worker) exit(ctx context.Context) error {
	select {
	case err := <-w.done:
		w.done <- err
		if err != nil {
			return fmt.Errorf("worker %d: %v", w.n, err)
		}
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("worker %d did not exit within a minute of its report", w.n)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kill ends the worker at once (if it still runs) and waits for it.
func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	err := <-w.done
	w.done <- err
}

// runIdleSpread is runIdle over spreadProcesses(cfg) server processes and
// as many worker processes, worker i holding its share of the connections
// on server i.
func runIdleSpread(ctx context.Context, cfg Config, res *Result) error {
	if len(cfg.ServerArgs) > 0 {
		return fmt.Errorf("--server-args go to parley dev only, and %d connections are more than one process holds (--conns-per-process %d): the connector nodes would not get them", cfg.Clients, cfg.ConnsPerProcess)
	}
	procs := spreadProcesses(cfg)
	rg, err := newRig(ctx, cfg)
	if err != nil {
		return err
	}
	defer rg.close()
	servers := []*server{rg.srv}
	defer func() {
		for _, s := range servers[1:] {
			if err := s.stop(); err != nil {
				cfg.Log.Warn("stopping a connector", "err", err)
			}
		}
	}()
	for i := 1; i < procs; i++ {
		s, err := startConnector(ctx, cfg.ParleyBin, string(rg.secret), rg.srv.broker, i, cfg.ServerEnv)
		if err != nil {
			return fmt.Errorf("connector %d: %w", i, err)
		}
		servers = append(servers, s)
	}
	before, err := serversRSS(ctx, servers)
	if err != nil {
		return err
	}

	workers := make([]*worker, 0, procs)
	defer func() {
		for _, w := range workers {
			w.kill() // those still running after an error; no-op otherwise
		}
	}()
	// The progress line's recorder counts the connections open; their
	// latencies come from the workers' reports.
	rec := newRecorder()
	start := time.Now()
	spids := make([]int, len(servers))
	for i, s := range servers {
		spids[i] = s.pid()
	}
	cpu := startCPUOf(spids)
	first := 0
	for i := range procs {
		share := cfg.Clients / procs
		if i < cfg.Clients%procs {
			share++
		}
		w, err := startWorker(cfg, i, servers[i].public, string(rg.secret), share, first, &rec.count)
		if err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
		workers = append(workers, w)
		cpu.addHelper(w.cmd.Process.Pid)
		first += share
	}
	prog := newProgress(cfg, start, rec, func() string {
		return fmt.Sprintf("%d open over %d processes", rec.count.Load(), procs)
	})
	total := newHist()
	nodes := map[string]int64{}
	for _, w := range workers {
		r, err := w.next(ctx)
		if err == nil && !r.Ready {
			err = fmt.Errorf("worker %d: a report out of turn", w.n)
		}
		if err != nil {
			prog.stop()
			return err
		}
		h, err := hdrhistogram.Decode([]byte(r.Hist))
		if err != nil {
			prog.stop()
			return fmt.Errorf("worker %d's latencies: %w", w.n, err)
		}
		total.Merge(h)
		// Each worker's connections are on its own node, and no two
		// workers share one: else the servers' memory is not what it
		// seems.
		if len(r.Nodes) != 1 {
			res.addError(fmt.Sprintf("worker %d's connections are on nodes %v; want one", w.n, r.Nodes))
		}
		for node, n := range r.Nodes {
			if _, dup := nodes[node]; dup {
				res.addError(fmt.Sprintf("node %s holds connections of two workers", node))
			}
			nodes[node] += n
		}
	}
	res.CPU = cpu.end()
	res.Seconds = time.Since(start).Seconds()
	res.Latency = latency(total)
	// Hold them, then measure.
	if res.Timeline, err = hold(ctx, cfg.Duration, prog); err != nil {
		return err
	}
	after, err := serversRSS(ctx, servers)
	if err != nil {
		return err
	}
	self, _ := statusKiB("/proc/self/status", "VmRSS")
	benchRSS := self
	for _, w := range workers {
		_ = w.stdin.Close()
	}
	for _, w := range workers {
		r, err := w.next(ctx)
		if err == nil && !r.Done {
			err = fmt.Errorf("worker %d: a report out of turn", w.n)
		}
		if err != nil {
			return err
		}
		if err := w.exit(ctx); err != nil {
			return err
		}
		res.ErrorCount += r.ErrorCount - int64(len(r.Errors))
		for _, e := range r.Errors {
			res.addError(fmt.Sprintf("worker %d: %s", w.n, e))
		}
		benchRSS += r.RSSKiB
	}
	res.Figures["server_rss_before_kib"] = float64(before)
	res.Figures["server_rss_after_kib"] = float64(after)
	res.Figures["server_kib_per_conn"] = float64(after-before) / float64(cfg.Clients)
	res.Figures["bench_rss_kib"] = float64(benchRSS)
	res.Count, res.Unit = int64(cfg.Clients), "conns/s"
	res.Counts["connections"] = int64(cfg.Clients)
	res.Counts["server_processes"] = int64(procs)
	for _, node := range slices.Sorted(maps.Keys(nodes)) {
		res.Counts["connections_at_"+node] = nodes[node]
	}
	return nil
}
