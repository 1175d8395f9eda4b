package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
)

// TestMarkedCommits: a consumer built with MarkedCommits commits what it
// marked in the background at its interval, and, with an interval that
// never comes, when told to (CommitMarked) and when a rebalance takes
// partitions from it (before its revoked callback runs); never what it
// did not mark.
func TestMarkedCommits(t *testing.T) {
	kc := startBroker(t)
	topic := kc.Topics().Events
	ctx := context.Background()
	producer := newClient(t, kc)
	if err := kafka.EnsureTopics(ctx, producer, kc); err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "conv-%d", i), Value: []byte("x")}
		if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(producer)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatal(err, ends.Error())
	}
	// committed returns how many partitions of topic group has committed
	// offsets for, and whether each of them, and every partition with
	// records, is committed exactly at its end.
	committed := func(t *testing.T, group string) (int, bool) {
		t.Helper()
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil || offs.Error() != nil {
			t.Fatal(err, offs.Error())
		}
		count, atEnd := 0, true
		ends.Each(func(e kadm.ListedOffset) {
			o, ok := offs.Lookup(topic, e.Partition)
			if ok && o.At >= 0 {
				count++
			}
			if (ok && o.At >= 0 && o.At != e.Offset) || (!ok || o.At < 0) && e.Offset > 0 {
				atEnd = false
			}
		})
		return count, atEnd
	}

	// consumer joins group, polls every record and marks the first mark;
	// revoked is signalled at each revocation, never blocking.
	consumer := func(t *testing.T, group string, interval time.Duration, mark int, revoked chan<- struct{}) *kgo.Client {
		cl := newClient(t, kc, append([]kgo.Opt{
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.BlockRebalanceOnPoll(),
		}, kafka.MarkedCommits(interval, func(context.Context, *kgo.Client, map[string][]int32) {
			select { // closing the client revokes again
			case revoked <- struct{}{}:
			default:
			}
		}, func(err error) { t.Errorf("commit before the revocation: %v", err) })...)...)
		var recs []*kgo.Record
		for len(recs) < n {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			fs := cl.PollRecords(pctx, n)
			err := pctx.Err()
			cancel()
			if err != nil {
				t.Fatalf("polled %d of %d records: %v", len(recs), n, err)
			}
			recs = append(recs, fs.Records()...)
		}
		cl.MarkCommitRecords(recs[:mark]...)
		cl.AllowRebalance()
		return cl
	}

	t.Run("at the interval", func(t *testing.T) {
		consumer(t, "periodic", kafka.MinCommitInterval, n, nil)
		testutil.WaitFor(t, 30*time.Second, "the marks to be committed", func() bool { _, atEnd := committed(t, "periodic"); return atEnd })
	})

	t.Run("only what is marked", func(t *testing.T) {
		cl := consumer(t, "partial", time.Hour, 0, nil) // polled, none marked
		if err := kafka.CommitMarked(cl); err != nil {
			t.Fatal(err)
		}
		if count, _ := committed(t, "partial"); count != 0 {
			t.Fatalf("offsets of %d partitions committed, none marked", count)
		}
	})

	t.Run("when told", func(t *testing.T) {
		cl := consumer(t, "told", time.Hour, n, nil)
		if count, _ := committed(t, "told"); count != 0 {
			t.Fatalf("offsets of %d partitions committed before the interval or CommitMarked", count)
		}
		if err := kafka.CommitMarked(cl); err != nil {
			t.Fatal(err)
		}
		if _, atEnd := committed(t, "told"); !atEnd {
			t.Fatal("CommitMarked did not commit the marks")
		}
	})

	t.Run("before a rebalance", func(t *testing.T) {
		revoked := make(chan struct{}, 1)
		consumer(t, "handover", time.Hour, n, revoked)
		if count, _ := committed(t, "handover"); count != 0 {
			t.Fatalf("offsets of %d partitions committed before the interval or a rebalance", count)
		}
		// A second member takes some of the partitions: the first one's
		// revocation commits its marks first.
		newClient(t, kc, kgo.ConsumerGroup("handover"), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
		select {
		case <-revoked:
		case <-time.After(time.Minute):
			t.Fatal("no partition was revoked from the first member")
		}
		if _, atEnd := committed(t, "handover"); !atEnd {
			t.Fatal("the revocation did not commit the marks")
		}
	})
}
