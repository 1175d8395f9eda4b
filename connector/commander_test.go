package connector_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
)

type env struct {
	t      *testing.T
	broker *embedded.Broker
	kc     kafka.Config
}

func newEnv(t *testing.T) *env {
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return &env{t: t, broker: b, kc: kafka.Config{Brokers: []string{b.Addr()}, Partitions: 4}.WithDefaults()}
}

// run runs fn until the test ends, or until the returned stop is called.
func (e *env) run(fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Error(err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) sequencer() {
	s, err := sequencer.New(sequencer.Config{Kafka: e.kc, NodeID: "seq"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.run(s.Run)
}

func (e *env) commander(node string, timeout time.Duration, part *int32) *connector.Commander {
	c, err := connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: e.kc, NodeID: node, ReplyTimeout: timeout, ReplyPartition: part})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	e.run(c.Run)
	<-c.Ready()
	return c
}

func cmd(conv, from, cmid string, body proto.Message) *parleyv1.Command {
	c := &parleyv1.Command{Conv: conv, From: from, Cmid: cmid}
	if _, err := schema.SetBody(c, body); err != nil {
		panic(err)
	}
	return c
}

func text(s string) *parleyv1.Send { return &parleyv1.Send{Kind: "text", Body: []byte(`"` + s + `"`)} }

func TestOutcomes(t *testing.T) {
	e := newEnv(t)
	e.sequencer()
	c := e.commander("node-a", 10*time.Second, nil)
	ctx := context.Background()
	g := ksuid.New().String()
	o, err := c.Do(ctx, cmd(g, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}))
	if err != nil || o.Event.GetSeq() != 1 {
		t.Fatalf("create: %v, %v", o, err)
	}
	first, err := c.Do(ctx, cmd(g, "alice", "m1", text("hi")))
	if err != nil || first.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED || first.Event.Seq != 2 {
		t.Fatalf("send: %v, %v", first, err)
	}
	retry, err := c.Do(ctx, cmd(g, "alice", "m1", text("hi")))
	if err != nil || retry.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_DUPLICATE ||
		retry.Event.MsgId != first.Event.MsgId || retry.Event.Seq != 2 {
		t.Fatalf("retry: %v, %v; want the original %v", retry, err, first.Event)
	}
	_, err = c.Do(ctx, cmd(g, "mallory", "x", text("let me in")))
	var rej *connector.RejectedError
	if !errors.As(err, &rej) || rej.Code() != schema.CodeForbidden {
		t.Fatalf("non-member send: %v, want a forbidden rejection", err)
	}
}

// TestNodesShareAReplyPartition: connectors reading the same outcome
// partition each get their own outcomes.
func TestNodesShareAReplyPartition(t *testing.T) {
	e := newEnv(t)
	e.sequencer()
	p := int32(1)
	a, b := e.commander("node-a", 10*time.Second, &p), e.commander("node-b", 10*time.Second, &p)
	ctx := context.Background()
	g := ksuid.New().String()
	if _, err := a.Do(ctx, cmd(g, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}})); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 40)
	for i := range 20 {
		for j, c := range []*connector.Commander{a, b} {
			go func() {
				o, err := c.Do(ctx, cmd(g, []string{"alice", "bob"}[j], string(rune('a'+i)), text("x")))
				if err == nil && o.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
					err = errors.New(o.Status.String())
				}
				results <- err
			}()
		}
	}
	for range 40 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnavailable: with nobody sequencing, a command times out as
// unavailable; with the log refusing writes, it fails as unavailable; a
// retry with the same cmid once things are back yields exactly one message.
func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	c := e.commander("node-a", 1500*time.Millisecond, nil)
	ctx := context.Background()
	g := ksuid.New().String()
	create := cmd(g, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP})
	if _, err := c.Do(ctx, create); !errors.Is(err, connector.ErrUnavailable) {
		t.Fatalf("with no sequencer: %v, want unavailable", err)
	}
	e.sequencer()
	// The create above is in the log and gets sequenced now.

	var down atomic.Bool
	down.Store(true)
	e.broker.Cluster().ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		e.broker.Cluster().KeepControl()
		req := r.(*kmsg.ProduceRequest)
		// The commander is the only producer outside a transaction here
		// (the sequencer's are transactional).
		if !down.Load() || req.TransactionID != nil {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				// Not retriable: the producer fails the record at once,
				// well before the reply timeout.
				sp.ErrorCode = kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	if _, err := c.Do(ctx, cmd(g, "alice", "m1", text("while down"))); !errors.Is(err, connector.ErrUnavailable) || !strings.Contains(err.Error(), "did not take") {
		t.Fatalf("with the log refusing writes: %v, want unavailable as the log did not take it", err)
	}
	down.Store(false)
	var o *parleyv1.Outcome
	var err error
	for try := 0; try < 20; try++ { // the client's retries, same cmid
		if o, err = c.Do(ctx, cmd(g, "alice", "m1", text("while down"))); err == nil {
			break
		}
	}
	if err != nil || o.Event.GetSeq() != 2 {
		t.Fatalf("retry after recovery: %v, %v", o, err)
	}
	var msgs int
	err = kafka.ReadToEnd(ctx, e.kc.ClientOpts(), e.kc.Topics().Events, nil, func(r *kgo.Record) error {
		ev := new(parleyv1.Event)
		if err := proto.Unmarshal(r.Value, ev); err != nil {
			return err
		}
		if ev.Type == parleyv1.EventType_EVENT_TYPE_MESSAGE {
			msgs++
		}
		return nil
	})
	if err != nil || msgs != 1 {
		t.Fatalf("%d messages in the log (%v), want exactly 1", msgs, err)
	}
}

// TestSubmit: Submit returns at once and calls done exactly once, with
// the outcome or, for a command still waiting when the commander closes,
// unavailable at the close rather than at the reply timeout.
func TestSubmit(t *testing.T) {
	commander := func(e *env, node string) (*connector.Commander, func()) {
		c, err := connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: e.kc, NodeID: node, ReplyTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		stop := e.run(c.Run)
		<-c.Ready()
		return c, stop
	}
	e := newEnv(t)
	c, stopRun := commander(e, "node-a")
	type result struct {
		o   *parleyv1.Outcome
		err error
	}
	submit := func(c *connector.Commander, command *parleyv1.Command) chan result {
		ch := make(chan result, 2) // a second call would show up
		c.Submit(command, func(o *parleyv1.Outcome, err error) { ch <- result{o, err} })
		return ch
	}
	answer := func(ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("no answer")
			return result{}
		}
	}
	// No sequencer yet: the create waits for its outcome.
	g := ksuid.New().String()
	waiting := submit(c, cmd(g, "alice", "", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP}))
	e.sequencer()
	if r := answer(waiting); r.err != nil || r.o.Event.GetSeq() != 1 {
		t.Fatalf("create: %v, %v", r.o, r.err)
	}
	// On a log nobody sequences, a send waits until its commander closes.
	c2, stop2 := commander(newEnv(t), "node-b")
	ch := submit(c2, cmd(g, "alice", "m1", text("hi")))
	select {
	case r := <-ch:
		t.Fatalf("answered with nobody sequencing: %v, %v", r.o, r.err)
	default:
	}
	stop2()
	closed := time.Now()
	c2.Close()
	if r := answer(ch); !errors.Is(r.err, connector.ErrUnavailable) {
		t.Fatalf("after close: %v, %v; want unavailable", r.o, r.err)
	}
	if d := time.Since(closed); d > 30*time.Second {
		t.Fatalf("failed %v after the close", d)
	}
	// A command submitted after the close fails too.
	if r := answer(submit(c2, cmd(g, "alice", "m2", text("late")))); !errors.Is(r.err, connector.ErrUnavailable) {
		t.Fatalf("submitted after close: %v, %v; want unavailable", r.o, r.err)
	}
	if len(ch) != 0 || len(waiting) != 0 {
		t.Fatal("done called twice")
	}
	stopRun()
	c.Close()
}
