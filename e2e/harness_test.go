package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// parleyBin is the parley binary built for child-process tests.
var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-e2e-")
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

// testLogger logs warnings and errors to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("PARLEY_TEST_DEBUG") {
	case "":
	case "kafka":
		level = slog.LevelDebug - 4 // the Kafka client's own logs too
	default:
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// cluster is an embedded broker for one test.
type cluster struct {
	t      testing.TB
	broker *embedded.Broker
	kc     kafka.Config
}

const testPartitions = 8

func newCluster(t testing.TB) *cluster {
	t.Helper()
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c := &cluster{t: t, broker: b, kc: kafka.Config{
		Brokers: []string{b.Addr()}, Partitions: testPartitions, Logger: testLogger(t),
	}.WithDefaults()}
	cl := c.client()
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, c.kc); err != nil {
		t.Fatal(err)
	}
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

// produce writes commands to the commands topic, in order, keyed by conv.
func (c *cluster) produce(cmds ...*parleyv1.Command) {
	c.t.Helper()
	cl := c.client(kgo.ProducerLinger(5 * time.Millisecond))
	defer cl.Close()
	var mu sync.Mutex
	var firstErr error
	for _, cmd := range cmds {
		v, err := proto.Marshal(cmd)
		if err != nil {
			c.t.Fatal(err)
		}
		cl.Produce(context.Background(), &kgo.Record{Topic: c.kc.Topics().Commands, Key: []byte(cmd.Conv), Value: v},
			func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			})
	}
	if err := cl.Flush(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	if firstErr != nil {
		c.t.Fatal(firstErr)
	}
}

// produceRaw writes an arbitrary record to the commands topic.
func (c *cluster) produceRaw(key, value []byte) {
	c.t.Helper()
	cl := c.client()
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: c.kc.Topics().Commands, Key: key, Value: value}).FirstErr(); err != nil {
		c.t.Fatal(err)
	}
}

// events reads every committed event.
func (c *cluster) events() []*parleyv1.Event {
	c.t.Helper()
	var out []*parleyv1.Event
	err := kafka.ReadToEnd(context.Background(), c.kc.ClientOpts(), c.kc.Topics().Events, nil, func(r *kgo.Record) error {
		ev := new(parleyv1.Event)
		if err := proto.Unmarshal(r.Value, ev); err != nil {
			return fmt.Errorf("event at %d/%d: %w", r.Partition, r.Offset, err)
		}
		if string(r.Key) != ev.Conv {
			return fmt.Errorf("event at %d/%d keyed %q for conv %q", r.Partition, r.Offset, r.Key, ev.Conv)
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// outcomes collects every committed outcome from the outcomes topic in the
// background.
type outcomes struct {
	mu   sync.Mutex
	byID map[string][]*parleyv1.Outcome
	n    int
}

func (c *cluster) collectOutcomes(ctx context.Context) *outcomes {
	o := &outcomes{byID: make(map[string][]*parleyv1.Outcome)}
	cl := c.client(
		kgo.ConsumeTopics(c.kc.Topics().Outcomes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		defer cl.Close()
		// The client may go back in the log (see TestSkipsReplays):
		// what it hands back again is not another outcome.
		next := make(map[int32]int64)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset < next[r.Partition] {
					return
				}
				next[r.Partition] = r.Offset + 1
				b := new(parleyv1.OutcomeBatch)
				if err := proto.Unmarshal(r.Value, b); err != nil {
					panic(fmt.Sprintf("undecodable outcome batch: %v", err))
				}
				o.mu.Lock()
				for _, out := range b.Outcomes {
					o.byID[out.MsgId] = append(o.byID[out.MsgId], out)
					o.n++
				}
				o.mu.Unlock()
			})
		}
	}()
	return o
}

// count returns the number of outcomes received.
func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

// answered returns the number of distinct commands with an outcome.
func (o *outcomes) answered() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.byID)
}

func (o *outcomes) get(msgID string) []*parleyv1.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byID[msgID]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

// groupCaughtUp reports whether group has committed offsets at the end of
// every partition of topic, a topic written in transactions (whose end
// offset is a transaction marker one past the last record).
func (c *cluster) groupCaughtUp(group, topic string) bool {
	cl := c.client()
	defer cl.Close()
	return testutil.GroupCaughtUp(cl, group, topic)
}

// child is a parley process started by a test.
type child struct {
	t   testing.TB
	cmd *exec.Cmd
	log string
}

func startChild(t testing.TB, name string, args ...string) *child {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(parleyBin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := &child{t: t, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, b)
		}
	})
	return c
}

// kill ends the child with SIGKILL.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// stop ends the child with SIGTERM and waits for a clean exit.
func (c *child) stop() {
	c.t.Helper()
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			c.t.Fatalf("%s exited with %v", c.cmd.Args[1], err)
		}
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		c.t.Fatalf("%s did not stop within 30s of SIGTERM", c.cmd.Args[1])
	}
}

func newMsgID() string { return ksuid.New().String() }

// writerLag returns how many events the writer group has not committed.
func (c *cluster) writerLag() int64 {
	cl := c.client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	ends, err := adm.ListEndOffsets(ctx, c.kc.Topics().Events)
	if err != nil {
		c.t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(ctx, "parley-writer")
	if err != nil {
		c.t.Fatal(err)
	}
	var lag int64
	ends.Each(func(e kadm.ListedOffset) {
		at := int64(0)
		if o, ok := committed.Lookup(e.Topic, e.Partition); ok {
			at = o.At
		}
		lag += max(e.Offset-at, 0)
	})
	return lag
}

// must returns v, panicking on err: for helpers whose inputs are the
// test's own constants.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
