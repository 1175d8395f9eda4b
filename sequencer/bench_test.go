package sequencer

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Benchmarks of the sequencer's per-transaction work on one partition:
// deciding a batch of sends against the conversations' state (apply), a
// create, and the whole transaction body (process: decode each command,
// decide it, encode its event, the changelog and the outcome batches).
// Run with go test -run '^$' -bench . -benchmem ./sequencer.
//
// The partition holds benchConvs groups of benchMembers members, each with
// a full dedup window. The defaults keep 10,000 entries and 24 h per
// conversation; here it is 1,000 entries and a minute, with the clock
// moving a minute per batch, so that the window stays full and chunks leave
// it as fast as they are sealed: the steady state of a busy partition, in
// memory the benchmark can afford.

const (
	benchConvs   = 100
	benchMembers = 10
	benchBatch   = 1000 // commands per batch: 10 per conversation
	benchStep    = int64(time.Minute / time.Millisecond)
)

var benchRules = rules{windowMinAgeMs: benchStep, windowMinEntries: 1000, maxMembers: 10_000}

// benchBody is a chat message body of about 100 bytes.
var benchBody = []byte(`{"text":"Are we still on for the design review at 3pm? I moved it to room 4B.","mentions":["bob"]}`)

// benchCMIDs is a pool of client message ids; a conversation cycles through
// it, so that an id comes back only long after it left the window.
var benchCMIDs = func() []string {
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = fmt.Sprintf("5f0c6f43-3e4b-4a43-9a1e-%012d", i)
	}
	return ids
}()

func benchUser(i int) string { return fmt.Sprintf("user-%06d", i) }

// benchPartition returns a partition of benchConvs groups whose ids all
// belong on partition 0 of nparts, with their windows filled, and the clock
// (Unix ms) to go on from.
func benchPartition(b *testing.B, nparts int32) (*partition, []string, int64) {
	p := newPartition(benchRules)
	now := int64(1_760_000_000_000)
	convs := make([]string, 0, benchConvs)
	for len(convs) < benchConvs {
		conv := ksuid.New().String()
		if kafka.KeyPartition([]byte(conv), nparts) != 0 {
			continue
		}
		members := make([]string, benchMembers-1)
		for i := range members {
			members[i] = benchUser(len(convs)*benchMembers + i + 1)
		}
		create := &parleyv1.Command{Conv: conv, From: benchUser(len(convs) * benchMembers), MsgId: ksuid.New().String(), Cmid: "create",
			Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: members, Title: "design review"}}}
		if _, out := p.apply(create, now); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
			b.Fatalf("create: %v %q", out.Reason, out.Message)
		}
		convs = append(convs, conv)
	}
	// Fill every window past its minimum, so that chunks leave it.
	send := &parleyv1.Command{MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: benchBody}}}
	for n := 0; n < benchRules.windowMinEntries+2*chunkSize; n++ {
		for c, conv := range convs {
			send.Conv, send.From, send.Cmid = conv, benchUser(c*benchMembers+n%benchMembers), "warm-"+strconv.Itoa(n)
			if _, out := p.apply(send, now); out.Status != parleyv1.OutcomeStatus_OUTCOME_STATUS_SEQUENCED {
				b.Fatalf("send: %v %q", out.Reason, out.Message)
			}
		}
		if n%benchMembers == benchMembers-1 {
			now += benchStep
		}
	}
	if err := p.flush(func(_, _ []byte) {}); err != nil {
		b.Fatal(err)
	}
	return p, convs, now
}

// BenchmarkApplySends decides a batch of 1,000 sends, 10 to each of 100
// conversations, each with a new cmid checked against the dedup window.
func BenchmarkApplySends(b *testing.B) {
	p, convs, now := benchPartition(b, 1)
	cmds := make([]*parleyv1.Command, benchBatch)
	for i := range cmds {
		c := i % benchConvs
		cmds[i] = &parleyv1.Command{Conv: convs[c], From: benchUser(c*benchMembers + i/benchConvs), MsgId: ksuid.New().String(),
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: benchBody}}}
	}
	var (
		n       int
		ev      *parleyv1.Event
		out     *parleyv1.Outcome
		lastSeq = p.convs[convs[0]].head.LastSeq
	)
	b.ReportAllocs()
	for b.Loop() {
		now += benchStep
		for i, cmd := range cmds {
			cmd.Cmid = benchCMIDs[(n*benchBatch/benchConvs+i/benchConvs)%len(benchCMIDs)]
			if ev, out = p.apply(cmd, now); ev == nil {
				b.Fatalf("send %d of batch %d: %v %v %q", i, n, out.Status, out.Reason, out.Message)
			}
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*benchBatch), "ns/cmd")
	c := p.convs[convs[0]]
	if got, want := c.head.LastSeq, lastSeq+int64(n*benchBatch/benchConvs); got != want || out.Event.Seq != ev.Seq {
		b.Fatalf("last seq %d, want %d", got, want)
	}
	if c.entries < benchRules.windowMinEntries || c.entries > benchRules.windowMinEntries+2*chunkSize {
		b.Fatalf("the window holds %d entries", c.entries)
	}
}

// BenchmarkApplySendsFromStore decides the batch of BenchmarkApplySends
// with the conversations' state in a state store and a cache of an eighth
// of them: each batch loads every conversation it touches, and after it
// the least recently used are written back and leave (the cost of a cache
// much smaller than the working set).
func BenchmarkApplySendsFromStore(b *testing.B) {
	p, convs, now := benchPartition(b, 1)
	st, err := openStateStore(b.TempDir(), slog.Default())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	p.store = st
	for _, c := range p.convs {
		c.cost, c.unstored = c.estimate(), true
		p.bytes += c.cost
	}
	budget := p.bytes / 8
	if err := p.evict(budget); err != nil {
		b.Fatal(err)
	}
	cmds := make([]*parleyv1.Command, benchBatch)
	for i := range cmds {
		c := i % benchConvs
		cmds[i] = &parleyv1.Command{Conv: convs[c], From: benchUser(c*benchMembers + i/benchConvs), MsgId: ksuid.New().String(),
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: benchBody}}}
	}
	n, loads := 0, p.loads
	b.ReportAllocs()
	for b.Loop() {
		now += benchStep
		for i, cmd := range cmds {
			cmd.Cmid = benchCMIDs[(n*benchBatch/benchConvs+i/benchConvs)%len(benchCMIDs)]
			if err := p.ensure(cmd.Conv); err != nil {
				b.Fatal(err)
			}
			if ev, out := p.apply(cmd, now); ev == nil {
				b.Fatalf("send %d of batch %d: %v %v %q", i, n, out.Status, out.Reason, out.Message)
			}
		}
		if err := p.flush(func(_, _ []byte) {}); err != nil {
			b.Fatal(err)
		}
		if err := p.evict(budget); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*benchBatch), "ns/cmd")
	b.ReportMetric(float64(p.loads-loads)/float64(n), "loads/batch")
	if p.loads-loads < int64(n*benchConvs*3/4) {
		b.Fatalf("%d loads in %d batches: the cache held more than it should", p.loads-loads, n)
	}
}

// BenchmarkApplyCreate decides the creation of a group (its id a new
// KSUID); the group is then dropped from the partition, so that the state
// does not grow with the iterations.
func BenchmarkApplyCreate(b *testing.B) {
	for _, size := range []int{10, 1000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			p := newPartition(benchRules)
			ids := make([]string, 64)
			for i := range ids {
				ids[i] = ksuid.New().String()
			}
			members := make([]string, size-1)
			for i := range members {
				members[i] = benchUser(i + 1)
			}
			create := &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: members, Title: "design review"}
			cmd := &parleyv1.Command{From: benchUser(0), MsgId: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", Cmid: benchCMIDs[0],
				Body: &parleyv1.Command_Create{Create: create}}
			var ev *parleyv1.Event
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				cmd.Conv = ids[n%len(ids)]
				var out *parleyv1.Outcome
				if ev, out = p.apply(cmd, 1_760_000_000_000); ev == nil {
					b.Fatalf("create: %v %q", out.Reason, out.Message)
				}
				delete(p.convs, cmd.Conv)
				p.dirty = p.dirty[:0]
				n++
			}
			if ev.Seq != 1 || len(ev.Members) != size {
				b.Fatalf("created seq %d with %d members", ev.Seq, len(ev.Members))
			}
		})
	}
}

// BenchmarkProcess runs the body of one transaction over a fetch of 1,000
// send records (10 to each of 100 conversations, from 4 connectors): decode,
// decide, encode each event, flush the changelog and encode the outcome
// batches. The produced records are counted, not sent. Each batch gives its
// commands new cmids by rewriting digits in the encoded records (cheap next
// to the rest).
func BenchmarkProcess(b *testing.B) {
	clock := time.UnixMilli(0)
	s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-1", Now: func() time.Time { return clock }})
	if err != nil {
		b.Fatal(err)
	}
	s.nparts, s.nout = s.cfg.Kafka.Partitions, s.cfg.Kafka.OutcomesPartitions
	p, convs, now := benchPartition(b, s.nparts)
	s.parts[0] = p
	clock = time.UnixMilli(now)

	const placeholder = "5f0c6f43-3e4b-4a43-9a1e-000000000000"
	t := s.cfg.Kafka.Topics()
	recs := make([]*kgo.Record, benchBatch)
	digits := make([]int, benchBatch) // where each record's cmid digits start
	for i := range recs {
		c := i % benchConvs
		cmd := &parleyv1.Command{Conv: convs[c], From: benchUser(c*benchMembers + i/benchConvs), MsgId: ksuid.New().String(), Cmid: placeholder,
			Ts: now, ReplyTo: &parleyv1.ReplyTo{Node: fmt.Sprintf("connector-%d", i%4), Partition: int32(i % 4)},
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: benchBody}}}
		v, err := proto.Marshal(cmd)
		if err != nil {
			b.Fatal(err)
		}
		digits[i] = bytes.Index(v, []byte(placeholder)) + len(placeholder) - 12
		recs[i] = &kgo.Record{Topic: t.Commands, Partition: 0, Offset: int64(i), Key: []byte(cmd.Conv), Value: v}
	}
	fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: t.Commands, Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs}}}}}}

	var events, changelog, outcomes int
	produce := func(r *kgo.Record) {
		switch r.Topic {
		case t.Events:
			events++
		case t.SequencerState:
			changelog++
		case t.Outcomes:
			outcomes++
		}
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		clock = clock.Add(time.Minute)
		for i, r := range recs {
			strconv.AppendInt(r.Value[:digits[i]], int64(100_000_000_000+n*benchBatch+i), 10) // 12 digits
		}
		events, changelog, outcomes = 0, 0, 0
		if err := s.process(fetches, produce); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*benchBatch), "ns/cmd")
	st := s.Stats()
	if events != benchBatch || outcomes != 4 || changelog < benchConvs || st.Events != int64(n*benchBatch) || st.Rejected+st.Duplicates+st.Undecodable != 0 {
		b.Fatalf("last batch: %d events, %d outcome batches, %d changelog records; stats %+v", events, outcomes, changelog, st)
	}
}
