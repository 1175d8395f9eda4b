package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/cassandrastore/cstest"
)

// parleyBin is the parley binary the role processes run.
var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-chaos-")
	if err != nil {
		panic(err)
	}
	if parleyBin, err = testutil.BuildParley(dir); err != nil {
		fmt.Fprintln(os.Stderr, "building parley:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	tokenSecret = "chaos-token-secret-0123456789abcdef"
	pushSecret  = "chaos-push-secret-0123456789abcdef"
	partitions  = 6
	heartbeat   = time.Second
)

// cluster is the system under test: the brokers (in this process, where
// their fault hooks are), the Cassandra node and the role processes.
type cluster struct {
	t       *testing.T
	dir     string
	kf      *kfake.Cluster
	kc      kafka.Config
	cass    *cstest.Instance
	cassCfg cassandrastore.Config
	procs   []*proc
	public  []string // the connectors' public addresses
}

func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.WithLogger(kfakeLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	c := &cluster{t: t, dir: dir, kf: kf}
	c.kc = kafka.Config{Brokers: kf.ListenAddrs(), Partitions: partitions, Logger: quietLogger()}.WithDefaults()
	cl := c.client()
	if err := kafka.EnsureTopics(context.Background(), cl, c.kc); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	c.cass = cstest.Launch(t)
	c.cassCfg = cassandrastore.Config{Hosts: []string{"127.0.0.1"}, Port: c.cass.Port, Keyspace: "parley", Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cassandrastore.Migrate(ctx, c.cassCfg, ""); err != nil {
		t.Fatal(err)
	}

	brokers := strings.Join(kf.ListenAddrs(), ",")
	cass := []string{"--cassandra", fmt.Sprintf("127.0.0.1:%d", c.cass.Port), "--keyspace", "parley"}
	common := []string{"--brokers", brokers, "--log-level", "warn"}
	for i := 1; i <= 2; i++ {
		// Each sequencer keeps its state in a directory of its own, kept
		// across its restarts (one sequencer to a directory: a second
		// one on it would fail to start).
		c.add(fmt.Sprintf("sequencer-%d", i), "sequencer", append([]string{"--node-id", fmt.Sprintf("seq-%d", i),
			"--state-dir", filepath.Join(dir, fmt.Sprintf("sequencer-%d-state", i))}, common...))
		c.add(fmt.Sprintf("writer-%d", i), "writer", append(append([]string{}, common...), cass...))
		c.add(fmt.Sprintf("fanout-%d", i), "fanout", append(append([]string{"--push-secret", pushSecret, "--instance-id", fmt.Sprintf("fanout-%d", i)}, common...), cass...))
	}
	for i := 1; i <= 2; i++ {
		public := testutil.FreeAddr(t)
		c.public = append(c.public, public)
		p := c.add(fmt.Sprintf("connector-%d", i), "connector", append(append([]string{
			"--node-id", fmt.Sprintf("node-%d", i), "--listen", public, "--push-listen", testutil.FreeAddr(t),
			"--push-secret", pushSecret, "--token-secret", tokenSecret, "--heartbeat", heartbeat.String(),
			// The clients pace themselves under the announced rate; a
			// reconnect storm after a kill must not be refused.
			"--conn-rate", "200", "--conn-burst", "400",
		}, common...), cass...))
		p.listen = public
	}
	for _, p := range c.procs {
		p.start()
	}
	for _, p := range c.procs {
		if p.listen != "" {
			testutil.WaitListening(t, p.listen)
		}
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.stop()
		}
	})
	return c
}

func (c *cluster) client(opts ...kgo.Opt) *kgo.Client {
	c.t.Helper()
	cl, err := kgo.NewClient(c.kc.ClientOpts(opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) add(name, role string, args []string) *proc {
	p := &proc{t: c.t, name: name, role: role, args: append([]string{role}, args...), log: filepath.Join(c.dir, name+".log"),
		restartAfter: time.Second}
	c.procs = append(c.procs, p)
	return p
}

// groupCaughtUp reports whether group has committed offsets at the end of
// every partition of topic (whose end may be a transaction marker).
func (c *cluster) groupCaughtUp(group, topic string) bool {
	cl := c.client()
	defer cl.Close()
	return testutil.GroupCaughtUp(cl, group, topic)
}

// proc is a role process, started again after each kill.
type proc struct {
	t      *testing.T
	name   string
	role   string
	args   []string
	log    string
	listen string // a connector's public address
	// restartAfter, if set, starts the process again after a run that
	// ended without the harness signaling it, as a service manager would:
	// that long after the first such exit in a row, twice as long after
	// each further one (up to maxRestartDelay).
	restartAfter time.Duration

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int // started so far
	// signaled is set when the harness signals the running process;
	// selfExits counts the runs that ended without it, inARow those in a
	// row that ran shorter than maxRestartDelay, restarts the restarts
	// that followed them. stopped is set at the end of the test: nothing
	// starts the process again.
	signaled  bool
	selfExits int
	inARow    int
	restarts  int
	stopped   bool
}

// maxRestartDelay bounds the wait before a restart after an exit.
const maxRestartDelay = 8 * time.Second

// start starts a run of the process, unless one is running (restarted
// after exiting by itself before a fault started it again) or the test
// is over.
func (p *proc) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) startLocked() error {
	if p.stopped || p.runningLocked() {
		return nil
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.name)
	cmd := exec.Command(parleyBin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.runs++
	run, started := p.runs, time.Now()
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		defer close(done) // once the run is counted
		if p.signaled {
			return
		}
		p.selfExits++
		if time.Since(started) >= maxRestartDelay {
			p.inARow = 0
		}
		p.inARow++
		if p.restartAfter <= 0 || p.stopped {
			return
		}
		p.restarts++
		delay := min(p.restartAfter<<min(p.inARow-1, 16), maxRestartDelay)
		time.AfterFunc(delay, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.runs != run { // started again meanwhile
				return
			}
			if err := p.startLocked(); err != nil {
				p.t.Errorf("restarting %s after it exited by itself: %v", p.name, err)
			}
		})
	}()
	p.cmd, p.done, p.signaled = cmd, done, false
	return nil
}

// stop ends the process for good: it is not started again.
func (p *proc) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.kill()
}

// exitedByItself returns how many of the process's runs ended without the
// harness signaling it.
func (p *proc) exitedByItself() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.selfExits
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *proc) runningLocked() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process (if it runs) and waits up to wait for it
// to exit; then it is killed.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd != nil {
		select {
		case <-done: // it exited already
		default:
			p.signaled = true
		}
	}
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *proc) kill() { p.signal(syscall.SIGKILL, time.Minute) }

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int64) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// quietLogger is for the harness's own Kafka clients: warnings and errors.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

type kfakeLogger struct{}

func (kfakeLogger) Logf(kfake.LogLevel, string, ...any) {}

// TestProcExitedByItself: the harness counts the runs of a role process
// that ended without its signal, and not those it ended.
func TestProcExitedByItself(t *testing.T) {
	dir := t.TempDir()
	p := &proc{t: t, name: "p", args: []string{"no-such-command"}, log: filepath.Join(dir, "p.log")}
	p.start()
	<-p.done
	if n := p.exitedByItself(); n != 1 {
		t.Fatalf("a process that exited by itself counted %d times", n)
	}
	p.args = []string{"dev", "--data-dir", filepath.Join(dir, "dev"), "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"}
	p.start()
	p.kill()
	p.kill() // a second signal to an exited process changes nothing
	if n := p.exitedByItself(); n != 1 {
		t.Fatalf("after a run the harness killed: %d exits by itself, want 1\n%s", n, p.tail(2000))
	}
}

// TestProcRestart: a process that exits by itself is started again by the
// harness, one it kills is not, one running is not started twice, and
// once stopped nothing starts it.
func TestProcRestart(t *testing.T) {
	dir := t.TempDir()
	runs := func(p *proc) int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.runs
	}
	p := &proc{t: t, name: "p", args: []string{"no-such-command"}, log: filepath.Join(dir, "p.log"), restartAfter: 10 * time.Millisecond}
	t.Cleanup(p.stop)
	p.start()
	testutil.WaitFor(t, 30*time.Second, "three restarts after exits by itself", func() bool { return runs(p) >= 4 })
	p.stop()
	n := runs(p)
	p.start()
	if runs(p) != n {
		t.Fatal("a stopped process was started again")
	}

	q := &proc{t: t, name: "q", log: filepath.Join(dir, "q.log"), restartAfter: 10 * time.Millisecond,
		args: []string{"dev", "--data-dir", filepath.Join(dir, "dev"), "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"}}
	t.Cleanup(q.stop) // on a failure too
	q.start()
	q.kill()
	q.mu.Lock()
	restarts := q.restarts
	q.mu.Unlock()
	if restarts != 0 {
		t.Fatalf("a process the harness killed is to be restarted (%d)", restarts)
	}
	q.start() // as a fault does after a kill
	q.start() // as one would after a restart came first
	if n := runs(q); n != 2 {
		t.Fatalf("%d runs started, want 2\n%s", n, q.tail(2000))
	}
}
