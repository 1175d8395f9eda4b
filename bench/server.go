package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
)

// rig is what a client scenario runs against: the node's URL, the secret
// that signs tokens, and the server process when this tool started it.
type rig struct {
	cfg    Config
	url    string
	secret []byte
	srv    *server // nil with a target
	// loopback: the target is on 127.0.0.0/8, so connections may come
	// from any loopback source address.
	loopback bool
}

// newRig starts `parley dev` (unless cfg has a target) and returns the
// rig; close stops what it started. limits are flags the started server
// gets before cfg.ServerArgs (which may override them).
func newRig(ctx context.Context, cfg Config, limits ...string) (*rig, error) {
	r := &rig{cfg: cfg}
	if cfg.Target != "" {
		u, err := url.Parse(cfg.Target)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return nil, fmt.Errorf("target %q: want ws://host:port/v1/ws", cfg.Target)
		}
		r.url, r.secret = cfg.Target, []byte(cfg.TokenSecret)
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() && ip.To4() != nil {
			r.loopback = true
		}
		return r, nil
	}
	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	r.secret = []byte(hex.EncodeToString(secret))
	args := append([]string{"--partitions", strconv.Itoa(cfg.Partitions)}, limits...)
	srv, err := startServer(ctx, cfg.ParleyBin, string(r.secret), append(args, cfg.ServerArgs...), cfg.ServerEnv)
	if err != nil {
		return nil, err
	}
	r.srv, r.url, r.loopback = srv, "ws://"+srv.public+"/v1/ws", true
	return r, nil
}

func (r *rig) close() error {
	if r.srv == nil {
		return nil
	}
	return r.srv.stop()
}

// token signs a token for user, valid for the run.
func (r *rig) token(user string) (string, error) {
	return auth.Sign(r.secret, user, 6*time.Hour, time.Now())
}

// portsPerSource is how many connections one loopback source address
// takes before the next is used: below the kernel's ephemeral port range.
const portsPerSource = 20_000

// dial connects client number i (it picks the source address) as
// user/device.
func (r *rig) dial(ctx context.Context, i int, user, device string, tracked map[string]int64) (*client.Client, error) {
	cfg := client.Config{
		URLs:    []string{r.url},
		Device:  device,
		Token:   func(context.Context) (string, error) { return r.token(user) },
		Logger:  r.cfg.Log,
		Tracked: tracked,
		NetDial: r.netDial(i),
		// The run's measures come from the events; reconnects are
		// errors of the run, not something to wait through slowly.
		MaxBackoff: time.Second,
	}
	return client.Dial(ctx, cfg)
}

// netDial returns the dial function of client i: from 127.0.0.1 for the
// first portsPerSource clients, then 127.0.0.2, and so on.
func (r *rig) netDial(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	k := i / portsPerSource
	if !r.loopback || k == 0 {
		return nil
	}
	d := &net.Dialer{LocalAddr: sourceAddr(k), Control: bindNoPort}
	return d.DialContext
}

// sourceAddr is the k-th loopback source address: 127.0.0.1, 127.0.0.2, …
func sourceAddr(k int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, byte(k>>16), byte(k>>8), byte(k)+1)}
}

// server is a `parley dev` or `parley connector` child process.
type server struct {
	name   string // "parley dev" or "parley connector", for messages
	cmd    *exec.Cmd
	dir    string // its data dir's parent, removed at stop
	public string // host:port of its public listener
	broker string // host:port of the embedded broker (parley dev's only)
	done   chan error
}

// startServer starts `parley dev` on a fresh data dir, with env added to
// this process's environment, and waits until it prints its addresses.
func startServer(ctx context.Context, bin, secret string, extra, env []string) (*server, error) {
	args := func(dir string) []string {
		return append([]string{"dev", "--data-dir", filepath.Join(dir, "data"), "--broker-listen", "127.0.0.1:0",
			"--listen", "127.0.0.1:0", "--log-level", "warn", "--token-secret", secret}, extra...)
	}
	s, err := startChild(ctx, "parley dev", bin, args, env, false, func(s *server, line string, ready func()) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "public":
			s.public = strings.TrimSuffix(strings.TrimPrefix(f[1], "ws://"), "/v1/ws")
		case len(f) >= 2 && f[0] == "broker":
			s.broker = f[1]
		case strings.HasPrefix(line, "Stop with"):
			ready()
		}
	})
	if err != nil {
		return nil, err
	}
	if s.public == "" || s.broker == "" {
		s.kill()
		return nil, errors.New("parley dev printed no public or broker address")
	}
	return s, nil
}

// startConnector starts `parley connector` number n on broker (a parley
// dev's), with an embedded store of its own, and waits until it listens.
// It has no push endpoint: it serves the connections of the idle
// scenario, to which nothing is pushed. env is added to this process's
// environment.
func startConnector(ctx context.Context, bin, secret, broker string, n int, env []string) (*server, error) {
	// Info level for the line that gives the listener's address; the
	// connector logs nothing else at that level per connection.
	args := func(dir string) []string {
		return []string{"connector", "--brokers", broker, "--store-dir", filepath.Join(dir, "store"),
			"--listen", "127.0.0.1:0", "--node-id", fmt.Sprintf("bench-node-%d", n), "--token-secret", secret,
			"--log-level", "info", "--log-format", "json"}
	}
	return startChild(ctx, "parley connector", bin, args, env, true, func(s *server, line string, ready func()) {
		var l struct{ Level, Msg, Addr string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Level == "WARN" || l.Level == "ERROR" {
			fmt.Fprintf(os.Stderr, "connector %d: %s\n", n, line)
		}
		if l.Msg == "public listener" && s.public == "" {
			s.public = l.Addr
			ready()
		}
	})
}

// startChild starts bin (default: this executable) with args(dir), dir a
// fresh directory for its data, and with env added to this process's
// environment. It hands each line the child writes on its standard output
// (or, with fromStderr, its standard error; the other stream goes to this
// process's standard error or nowhere) to line, which calls ready once the
// child is ready. It returns then, or when the child exits, within 60s,
// or when ctx ends.
func startChild(ctx context.Context, name, bin string, args func(dir string) []string, env []string, fromStderr bool, line func(s *server, text string, ready func())) (*server, error) {
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = exe
	}
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args(dir)...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = childAttr()
	var out io.Reader
	if fromStderr {
		out, err = cmd.StderrPipe()
	} else {
		cmd.Stderr = os.Stderr
		out, err = cmd.StdoutPipe()
	}
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &server{name: name, cmd: cmd, dir: dir, done: make(chan error, 1)}
	found := make(chan struct{})
	var once sync.Once
	ready := func() { once.Do(func() { close(found) }) }
	go s.follow(out, func(text string) { line(s, text, ready) })
	if err := s.wait(ctx, found); err != nil {
		return nil, err
	}
	return s, nil
}

// follow hands each line the process writes on out to line, reads out to
// its end (so that the process never blocks on it), and then waits for the
// process and sends its exit on s.done: Wait closes the pipe, so it must
// not run before everything written was read.
func (s *server) follow(out io.Reader, line func(string)) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line(sc.Text())
	}
	_, _ = io.Copy(io.Discard, out) // past a line too long to scan
	s.done <- s.cmd.Wait()
}

// wait waits until ready is closed, for at most 60s; it kills the process
// if that fails.
func (s *server) wait(ctx context.Context, ready <-chan struct{}) error {
	select {
	case <-ready:
		return nil
	case err := <-s.done:
		s.done <- err
		os.RemoveAll(s.dir)
		return fmt.Errorf("%s exited at start: %v", s.name, err)
	case <-time.After(60 * time.Second):
		s.kill()
		return fmt.Errorf("%s was not ready within 60s", s.name)
	case <-ctx.Done():
		s.kill()
		return ctx.Err()
	}
}

// serversRSS returns the sum of the servers' settled RSS (settledRSS).
func serversRSS(ctx context.Context, servers []*server) (int64, error) {
	var sum int64
	for _, s := range servers {
		rss, err := settledRSS(ctx, s.pid())
		if err != nil {
			return 0, err
		}
		sum += rss
	}
	return sum, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
	os.RemoveAll(s.dir)
}

// stop ends the server with SIGTERM (SIGKILL after 30s) and removes its
// data.
func (s *server) stop() error {
	defer os.RemoveAll(s.dir)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM", s.name, err)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM", s.name)
	}
}

// procCPU returns the CPU time (user + system) process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// After the command name (which may hold spaces) come the state
	// (field 3) on; utime and stime are fields 14 and 15, in clock ticks
	// (USER_HZ, 100 on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// procRSS returns process pid's resident set size in KiB.
func procRSS(pid int) (int64, error) {
	return statusKiB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
}

func meminfoKiB(key string) (int64, bool) {
	n, err := statusKiB("/proc/meminfo", key)
	return n, err == nil
}

// statusKiB reads the "key: N kB" line of a /proc file.
func statusKiB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineTimes returns, from /proc/stat, the CPU time all cores spent
// running (user, nice, system, irq, softirq) and the time the hypervisor
// kept them from running while they had work (steal); zero where there
// is no /proc/stat.
func machineTimes() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	busy, steal, _ = parseProcStat(b)
	return busy, steal
}

// parseProcStat reads the busy and stolen time from the "cpu" line that
// opens /proc/stat, in ticks of 10 ms (USER_HZ).
func parseProcStat(b []byte) (busy, steal time.Duration, ok bool) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	ticks := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * 10 * time.Millisecond
	}
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		busy += ticks(i)
	}
	return busy, ticks(8), true
}

// cpuMeter measures the CPU used between its start and its end.
type cpuMeter struct {
	servers, helpers []int // pids: the servers', and this tool's other processes'
	srv, self        time.Duration
	busy, steal      time.Duration
	start            time.Time
}

// startCPU starts measuring this tool's CPU and srv's (which may be nil).
func startCPU(srv *server) *cpuMeter {
	if srv == nil {
		return startCPUOf(nil)
	}
	return startCPUOf([]int{srv.pid()})
}

// startCPUOf starts measuring the CPU of the server processes servers and
// of this tool.
func startCPUOf(servers []int) *cpuMeter {
	m := &cpuMeter{servers: servers, start: time.Now()}
	m.busy, m.steal = machineTimes()
	m.srv, m.self = m.read()
	return m
}

// addHelper counts the CPU of process pid, started by this tool since the
// meter started, as this tool's.
func (m *cpuMeter) addHelper(pid int) { m.helpers = append(m.helpers, pid) }

// read returns the CPU time the servers and this tool (helpers included)
// have used so far.
func (m *cpuMeter) read() (srv, self time.Duration) {
	self = selfCPU()
	for _, pid := range m.servers {
		t, _ := procCPU(pid)
		srv += t
	}
	for _, pid := range m.helpers {
		t, _ := procCPU(pid)
		self += t
	}
	return srv, self
}

func (m *cpuMeter) end() *CPU {
	secs := time.Since(m.start).Seconds()
	srv, self := m.read()
	srv, self = srv-m.srv, self-m.self
	busy, steal := machineTimes()
	busy, steal = busy-m.busy, steal-m.steal
	return &CPU{
		Server: srv.Seconds() / secs,
		Bench:  self.Seconds() / secs,
		Other:  max(busy-srv-self, 0).Seconds() / secs,
		Stolen: steal.Seconds() / secs,
	}
}
