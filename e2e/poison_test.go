package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/writer"
)

// skippedCount reads parley_records_skipped_total{role, topic, reason}
// from reg, as a scrape of /metrics would.
func skippedCount(t *testing.T, reg prometheus.Gatherer, role, topic, reason string) int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() != "parley_records_skipped_total" {
			continue
		}
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["role"] == role && labels["topic"] == topic && labels["reason"] == reason {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

// TestPoisonedRecords puts records that no connector or sequencer writes on
// parley.commands and parley.events, between good traffic: undecodable
// bytes, and records that decode but break their topic's rules (a wrong
// key, an invalid conversation id, seq 0, a field over its limit, no or an
// unknown body or type, a member id that is not one, a seq far ahead, an
// event of a conversation never created). The sequencer, the writer and
// fanout each skip every one with the reason in their log and in
// parley_records_skipped_total, and none of them stalls: every good
// command is sequenced and answered, the store holds exactly the good
// events, and both members' devices get every good event pushed, in order,
// and nothing else.
func TestPoisonedRecords(t *testing.T) {
	c := newCluster(t)
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry() // one process: the roles share it, as in parley dev
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })

	seq, err := sequencer.New(sequencer.Config{Kafka: c.kc, NodeID: "seq-poison", Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "sequencer", seq.Run)
	w, err := writer.New(writer.Config{Kafka: c.kc, Logger: log, Registerer: reg}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "writer", w.Run)
	f, err := fanout.New(fanout.Config{Kafka: c.kc, PushSecret: []byte(rtPushSecret), Logger: log, Registerer: reg,
		StoreWait: 300 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "fanout", f.Run)
	cmd, err := connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: c.kc, NodeID: "poison-1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cmd.Close)
	g, err := connector.NewGateway(connector.GatewayConfig{Listen: "127.0.0.1:0", TokenSecret: []byte(rtTokenSecret),
		PushListen: "127.0.0.1:0", PushSecret: []byte(rtPushSecret), DrainWindow: 10 * time.Millisecond, Logger: log}, cmd, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(); err != nil {
		t.Fatal(err)
	}
	runInProcess(t, "connector", func(ctx context.Context) error { return connector.Serve(ctx, cmd, g) })
	waitFor(t, time.Minute, "fanout to see the node", func() bool { return f.NodeAlive("poison-1") })

	alice := connect(t, "alice", "alice", "phone", nil, g.Addr().String())
	bob := connect(t, "bob", "bob", "phone", nil, g.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	group, err := alice.c.Create(ctx, "group", []string{"bob"}, "poison")
	if err != nil {
		t.Fatal(err)
	}
	alice.sendAll(group, "before", 10)

	// Poisoned commands, on the group's partition, between its commands.
	t0 := c.kc.Topics()
	valid := func(conv string, body proto.Message) *parleyv1.Command {
		cm := &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: "x-" + newMsgID()}
		return must(schema.SetBody(cm, body))
	}
	text := &parleyv1.Send{Kind: "text", Body: []byte(`"poison"`)}
	// A command whose body is of a type no Parley version knows (field 99).
	unknownBody := must(proto.Marshal(&parleyv1.Command{Conv: group, MsgId: newMsgID(), From: "alice"}))
	unknownBody = protowire.AppendVarint(protowire.AppendTag(unknownBody, 99, protowire.VarintType), 7)
	commands := []struct {
		key, value []byte
		reason     string
	}{
		{[]byte(group), []byte("\xff\xfe not a protobuf"), schema.SkipUndecodable},
		{[]byte(group), nil, schema.SkipMalformed},
		{[]byte(group), must(proto.Marshal(valid("another-conv", text))), schema.SkipMalformed},
		{[]byte(group), unknownBody, schema.SkipMalformed},
		{[]byte(group), must(proto.Marshal(valid(group, &parleyv1.Send{Kind: strings.Repeat("k", 100_000), Body: []byte("1")}))), schema.SkipMalformed},
		{[]byte("bad/conv"), must(proto.Marshal(valid("bad/conv", text))), schema.SkipMalformed},
	}
	for _, p := range commands {
		c.produceRaw(p.key, p.value)
	}

	// Poisoned events, on the group's partition of the events topic,
	// produced outside any transaction (read_committed readers see them).
	ev := func(conv string, seq int64, typ parleyv1.EventType, set func(*parleyv1.Event)) []byte {
		e := &parleyv1.Event{Conv: conv, Seq: seq, Type: typ, MsgId: newMsgID(), From: "alice", Ts: time.Now().UnixMilli(),
			Kind: "text", Body: []byte(`"forged"`)}
		if set != nil {
			set(e)
		}
		return must(proto.Marshal(e))
	}
	message := parleyv1.EventType_EVENT_TYPE_MESSAGE
	events := []struct {
		key, value []byte
		reason     string
	}{
		{[]byte(group), []byte("\x0a\xff\xff\xff garbage"), schema.SkipUndecodable},
		{[]byte(group), ev(group, 0, message, nil), schema.SkipMalformed},
		{[]byte(group), ev("another-conv", 12, message, nil), schema.SkipMalformed},
		{[]byte("bad/conv"), ev("bad/conv", 12, message, nil), schema.SkipMalformed},
		{[]byte(group), ev(group, 12, message, func(e *parleyv1.Event) { e.Body = bytes.Repeat([]byte("1"), schema.MaxBodyLen+1) }), schema.SkipMalformed},
		{[]byte(group), ev(group, 12, 42, nil), schema.SkipMalformed},
		{[]byte(group), ev(group, 12, parleyv1.EventType_EVENT_TYPE_MEMBER_ADDED, func(e *parleyv1.Event) {
			e.Body, e.Members = nil, []string{"mallory\x00alice"}
		}), schema.SkipMalformed},
		{[]byte(group), ev(group, 1<<40, message, nil), schema.SkipOutOfSequence},
	}
	for _, p := range events {
		cl := c.client()
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: t0.Events, Key: p.key, Value: p.value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}

	// Good traffic after the poison, from both members.
	alice.sendAll(group, "after", 10)
	last := bob.sendAll(group, "bob", 5)
	if want := int64(1 + 10 + 10 + 5); last != want {
		t.Fatalf("last seq %d, want %d: the poison took seqs or lost commands", last, want)
	}

	// Every good event pushed to both devices, in order, once, and no
	// forged one (upTo checks the exact list).
	alice.upTo(group, 0, last)
	bob.upTo(group, 0, last)

	// Nobody stalls: each group has consumed its topics to the end.
	waitFor(t, time.Minute, "the writer to consume every record", func() bool { return c.groupCaughtUp("parley-writer", t0.Events) })
	waitFor(t, time.Minute, "fanout to consume every record", func() bool { return c.groupCaughtUp("parley-fanout", t0.Events) })
	waitFor(t, time.Minute, "the sequencer to consume every record", func() bool { return c.groupCaughtUp("parley-sequencer", t0.Commands) })

	// The store holds exactly the good events.
	evs, more, err := st.Events(context.Background(), group, store.Range{Limit: 1000})
	if err != nil || more || len(evs) != int(last) {
		t.Fatalf("store: %d events (more %v, %v), want %d", len(evs), more, err, last)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) || string(e.Body) == `"forged"` {
			t.Fatalf("store event %d: seq %d body %s", i, e.Seq, e.Body)
		}
	}
	if h, err := st.Conversation(context.Background(), group); err != nil || h.LastSeq != last {
		t.Fatalf("store head %+v, %v: want last seq %d", h, err, last)
	}
	if m, err := st.Members(context.Background(), group); err != nil || len(m) != 2 {
		t.Fatalf("members %v, %v: want alice and bob", m, err)
	}

	// Counted per reason, by each role.
	want := map[[3]string]int{}
	for _, p := range commands {
		want[[3]string{"sequencer", t0.Commands, p.reason}]++
	}
	for _, p := range events {
		want[[3]string{"writer", t0.Events, p.reason}]++
		want[[3]string{"fanout", t0.Events, p.reason}]++
	}
	for _, role := range []string{"sequencer", "writer", "fanout"} {
		topic := t0.Events
		if role == "sequencer" {
			topic = t0.Commands
		}
		for _, reason := range schema.SkipReasons {
			k := [3]string{role, topic, reason}
			if got := skippedCount(t, reg, role, topic, reason); got != want[k] {
				t.Errorf("parley_records_skipped_total{role=%q,topic=%q,reason=%q} = %d, want %d", role, topic, reason, got, want[k])
			}
		}
	}
	if n := seq.Stats().Undecodable; n != 1 {
		t.Errorf("sequencer stats: %d undecodable, want 1", n)
	}
	if _, n := w.Stored(); n != int64(len(events)) {
		t.Errorf("writer stats: %d skipped, want %d", n, len(events))
	}

	// Each skip is logged with its reason, by the role that skipped it.
	for k, n := range want {
		role, reason := k[0], k[2]
		got := 0
		for _, l := range logs.Lines() {
			if strings.Contains(l, "role="+role) && strings.Contains(l, "reason="+reason) {
				got++
			}
		}
		if got < n {
			t.Errorf("%s logged %d skips for %s, want %d", role, got, reason, n)
		}
	}
	t.Logf("skipped and counted: %v", fmt.Sprint(want))
}
