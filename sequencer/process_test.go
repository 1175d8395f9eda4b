package sequencer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/kafka"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// TestProcessFlushesOncePerTransaction: a transaction whose commands for
// one partition come in several fetches (as gather leaves them) writes each
// conversation's head once, after the last of them, and a chunk sealed
// within it once.
func TestProcessFlushesOncePerTransaction(t *testing.T) {
	s, err := New(Config{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}, NodeID: "seq-test",
		Now: func() time.Time { return time.UnixMilli(1_760_000_000_000) }})
	if err != nil {
		t.Fatal(err)
	}
	s.nparts, s.nout = s.cfg.Kafka.Partitions, s.cfg.Kafka.OutcomesPartitions
	conv := ksuid.New().String()
	for kafka.KeyPartition([]byte(conv), s.nparts) != 0 {
		conv = ksuid.New().String()
	}
	s.parts[0] = newPartition(s.rules)
	topic := s.cfg.Kafka.Topics().Commands
	var offset int64
	record := func(cmid string, body proto.Message) *kgo.Record {
		cmd := &parleyv1.Command{Conv: conv, From: "alice", MsgId: ksuid.New().String(), Cmid: cmid}
		switch b := body.(type) {
		case *parleyv1.Create:
			cmd.Body = &parleyv1.Command_Create{Create: b}
		case *parleyv1.Send:
			cmd.Body = &parleyv1.Command_Send{Send: b}
		}
		v, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		offset++
		return &kgo.Record{Topic: topic, Partition: 0, Offset: offset, Key: []byte(conv), Value: v}
	}
	fetch := func(recs ...*kgo.Record) kgo.Fetch {
		return kgo.Fetch{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs}}}}}
	}
	// Three fetches: the create and 2×chunkSize sends, so that chunks are
	// sealed in the middle fetch.
	var fetches kgo.Fetches
	fetches = append(fetches, fetch(record("create", &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}})))
	for f := range 2 {
		var recs []*kgo.Record
		for i := range chunkSize {
			recs = append(recs, record(fmt.Sprintf("m%d-%d", f, i), &parleyv1.Send{Kind: "text", Body: []byte(`"hi"`)}))
		}
		fetches = append(fetches, fetch(recs...))
	}

	changelog := map[string]int{}
	events := 0
	if err := s.process(fetches, func(r *kgo.Record) {
		switch r.Topic {
		case s.cfg.Kafka.Topics().SequencerState:
			changelog[string(r.Key)]++
		case s.cfg.Kafka.Topics().Events:
			events++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if events != 1+2*chunkSize {
		t.Fatalf("%d events, want %d", events, 1+2*chunkSize)
	}
	var chunks int
	for k, n := range changelog {
		if n != 1 {
			t.Errorf("%s written %d times in one transaction", k, n)
		}
		if strings.Contains(k, "/k/") {
			chunks++
		}
	}
	// The create's entry and 2×chunkSize sends: two full chunks.
	if changelog[headKey(conv)] != 1 || chunks != 2 {
		t.Fatalf("changelog %v: want the head once and two chunks", changelog)
	}
}
