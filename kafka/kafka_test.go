package kafka_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
)

func startBroker(t *testing.T) kafka.Config {
	t.Helper()
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return kafka.Config{Brokers: []string{b.Addr()}, Partitions: 3}.WithDefaults()
}

func newClient(t *testing.T, kc kafka.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kc.ClientOpts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestEnsureTopics(t *testing.T) {
	kc := startBroker(t)
	cl := newClient(t, kc)
	ctx := context.Background()
	for range 2 { // the second call finds everything in place
		if err := kafka.EnsureTopics(ctx, cl, kc); err != nil {
			t.Fatal(err)
		}
	}
	tp := kc.Topics()
	want := map[string]map[string]string{
		tp.Commands:       {"cleanup.policy": "delete", "retention.ms": "604800000"},
		tp.Events:         {"cleanup.policy": "delete", "retention.ms": "-1"},
		tp.Outcomes:       {"cleanup.policy": "delete", "retention.ms": "3600000"},
		tp.SequencerState: {"cleanup.policy": "compact"},
	}
	adm := kadm.NewClient(cl)
	rcs, err := adm.DescribeTopicConfigs(ctx, tp.Commands, tp.Events, tp.Outcomes, tp.SequencerState)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		for k, v := range want[rc.Name] {
			got := ""
			for _, c := range rc.Configs {
				if c.Key == k && c.Value != nil {
					got = *c.Value
				}
			}
			if got != v {
				t.Errorf("%s %s = %q, want %q", rc.Name, k, got, v)
			}
		}
	}
	for topic := range want {
		if n, err := kafka.PartitionCount(ctx, cl, topic); err != nil || n != 3 {
			t.Errorf("%s has %d partitions (%v), want 3", topic, n, err)
		}
	}
}

// TestDeleteRetention reads delete.retention.ms as the broker describes
// it: the day EnsureTopics gives the changelog, a topic's own setting, and
// an error for a topic that does not exist.
func TestDeleteRetention(t *testing.T) {
	kc := startBroker(t)
	cl := newClient(t, kc)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, kc); err != nil {
		t.Fatal(err)
	}
	if d, err := kafka.DeleteRetention(ctx, cl, kc.Topics().SequencerState); err != nil || d != 24*time.Hour {
		t.Errorf("the changelog's delete.retention.ms: %v, %v; want 24h", d, err)
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{
		"cleanup.policy": kadm.StringPtr("compact"), "delete.retention.ms": kadm.StringPtr("600000"),
	}, "short")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	if d, err := kafka.DeleteRetention(ctx, cl, "short"); err != nil || d != 10*time.Minute {
		t.Errorf("a topic's own delete.retention.ms: %v, %v; want 10m", d, err)
	}
	if d, err := kafka.DeleteRetention(ctx, cl, "missing"); err == nil {
		t.Errorf("a missing topic's delete.retention.ms: %v, no error", d)
	}
}

// TestTopicID: a topic made again under the same name has another id.
func TestTopicID(t *testing.T) {
	kc := startBroker(t)
	cl := newClient(t, kc)
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	create := func() string {
		t.Helper()
		resp, err := adm.CreateTopic(ctx, 1, -1, nil, "log")
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatal(err)
		}
		// A client of its own: a client caches topic metadata a while.
		id, err := kafka.TopicID(ctx, newClient(t, kc), "log")
		if err != nil || id == "" {
			t.Fatalf("TopicID: %q, %v", id, err)
		}
		return id
	}
	first := create()
	if resp, err := adm.DeleteTopic(ctx, "log"); err != nil || resp.Err != nil {
		t.Fatal(err, resp.Err)
	}
	if second := create(); second == first {
		t.Fatalf("the topic made again has the same id %s", first)
	}
	if id, err := kafka.TopicID(ctx, cl, "missing"); err == nil {
		t.Fatalf("a missing topic's id: %q, no error", id)
	}
}

func TestEnsureTopicsRefusesUnequalPartitions(t *testing.T) {
	kc := startBroker(t)
	cl := newClient(t, kc)
	ctx := context.Background()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 5, -1, nil, kc.Topics().SequencerState); err != nil {
		t.Fatal(err)
	}
	err := kafka.EnsureTopics(ctx, cl, kc)
	if err == nil || !strings.Contains(err.Error(), "must be equal") {
		t.Fatalf("EnsureTopics with 3 command and 5 state partitions: %v", err)
	}
}

// TestReadToEnd checks that ReadToEnd returns every committed record up to
// where the log stood when it began, skips aborted ones, and finishes even
// when a partition ends in a transaction marker or is empty.
func TestReadToEnd(t *testing.T) {
	kc := startBroker(t)
	ctx := context.Background()
	topic := "rte"
	cl := newClient(t, kc)
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	plain := newClient(t, kc, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte("p0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	txn := newClient(t, kc, kgo.TransactionalID("rte-test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	inTxn := func(commit bool, vals ...string) {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if err := txn.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	inTxn(true, "c1", "c2")
	inTxn(false, "aborted")
	inTxn(true, "c3") // partition 1 now ends in a commit marker; partition 2 is empty

	var got []string
	err := kafka.ReadToEnd(ctx, kc.ClientOpts(), topic, nil, func(r *kgo.Record) error {
		got = append(got, string(r.Value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "p0,c1,c2,c3" && strings.Join(got, ",") != "c1,c2,c3,p0" {
		t.Fatalf("ReadToEnd read %v, want p0 and c1 c2 c3 (not the aborted record)", got)
	}

	// A transaction left open (by a producer that died, say) hides every
	// later record of its partition from read_committed readers, including
	// records other producers commit after it. ReadToEnd waits for it to end
	// rather than miss those.
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	other := newClient(t, kc, kgo.TransactionalID("rte-other"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := other.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("c4")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := other.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	type result struct {
		got []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var got []string
		err := kafka.ReadToEnd(ctx, kc.ClientOpts(), topic, []int32{1}, func(r *kgo.Record) error {
			got = append(got, string(r.Value))
			return nil
		})
		done <- result{got, err}
	}()
	// ReadToEnd must still be waiting while the transaction is open.
	select {
	case res := <-done:
		t.Fatalf("ReadToEnd returned %v, %v while a transaction was open", res.got, res.err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || strings.Join(res.got, ",") != "c1,c2,c3,c4" {
		t.Fatalf("ReadToEnd across an open transaction read %v, %v; want c1 c2 c3 c4", res.got, res.err)
	}
}

// TestReadFromOutsideTheLog: ReadFrom reads from an offset within the
// log, from the start for offset 0 wherever the start is, and refuses
// (*RangeError, nothing read) an offset past the end or below a start
// that has moved up.
func TestReadFromOutsideTheLog(t *testing.T) {
	kc := startBroker(t)
	ctx := context.Background()
	const topic = "rfo"
	cl := newClient(t, kc)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte{byte('0' + i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(from int64) (string, error) {
		var got []byte
		err := kafka.ReadFrom(ctx, kc.ClientOpts(), topic, map[int32]int64{0: from}, func(r *kgo.Record) error {
			got = append(got, r.Value...)
			return nil
		})
		return string(got), err
	}
	if got, err := read(5); err != nil || got != "56789" {
		t.Errorf("from 5: %q, %v", got, err)
	}
	if got, err := read(10); err != nil || got != "" {
		t.Errorf("from the end: %q, %v", got, err)
	}
	var rerr *kafka.RangeError
	if got, err := read(11); !errors.As(err, &rerr) || got != "" || !slices.Equal(rerr.Partitions, []int32{0}) {
		t.Errorf("from past the end: %q, %v; want a RangeError for partition 0", got, err)
	}
	del, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 3}}})
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(2); !errors.As(err, &rerr) || got != "" {
		t.Errorf("from below the start: %q, %v; want a RangeError", got, err)
	}
	if got, err := read(0); err != nil || got != "3456789" {
		t.Errorf("from 0 (the start): %q, %v", got, err)
	}
}

func TestKeyPartitionMatchesTheProducer(t *testing.T) {
	kc := startBroker(t)
	ctx := context.Background()
	cl := newClient(t, kc)
	if err := kafka.EnsureTopics(ctx, cl, kc); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "conversation-1", "2Ab3XyZ", "d.0123456789abcdef"} {
		r := &kgo.Record{Topic: kc.Topics().Commands, Key: []byte(key), Value: []byte("x")}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if p := kafka.KeyPartition([]byte(key), 3); p != r.Partition {
			t.Errorf("KeyPartition(%q) = %d, the producer chose %d", key, p, r.Partition)
		}
	}
}
