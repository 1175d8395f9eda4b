package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
)

// TestMarkedCommits: a consumer built with MarkedCommits commits what it
// marked in the background at its interval, and, with an interval that
// never comes, when a rebalance takes partitions from it (before its
// revoked callback runs) and when told to (CommitMarked); never what it
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
	caughtUp := func(group string) bool { return testutil.GroupCaughtUp(producer, group, topic) }

	// consumer joins group and marks the first mark records it polls (all
	// of them for mark = n); revoked signals each revocation.
	consumer := func(group string, interval time.Duration, revoked chan<- struct{}) (*kgo.Client, func(mark int)) {
		cl := newClient(t, kc, append([]kgo.Opt{
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.BlockRebalanceOnPoll(),
		}, kafka.MarkedCommits(interval, func(context.Context, *kgo.Client, map[string][]int32) {
			select { // closing the client revokes again: never block
			case revoked <- struct{}{}:
			default:
			}
		}, func(err error) { t.Errorf("commit before the revocation: %v", err) })...)...)
		consume := func(mark int) {
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
		}
		return cl, consume
	}

	t.Run("at the interval", func(t *testing.T) {
		_, consume := consumer("periodic", 100*time.Millisecond, nil)
		consume(n)
		testutil.WaitFor(t, 30*time.Second, "the marks to be committed", func() bool { return caughtUp("periodic") })
	})

	t.Run("only what is marked", func(t *testing.T) {
		cl, consume := consumer("partial", time.Hour, nil)
		consume(0) // polled, none marked
		if err := kafka.CommitMarked(cl); err != nil {
			t.Fatal(err)
		}
		if caughtUp("partial") {
			t.Fatal("records polled but not marked were committed")
		}
	})

	t.Run("before a rebalance and when told", func(t *testing.T) {
		revoked := make(chan struct{}, 1)
		a, consume := consumer("handover", time.Hour, revoked)
		consume(n)
		if caughtUp("handover") {
			t.Fatal("committed before the interval, a rebalance or CommitMarked")
		}
		// A second member takes some of the partitions: a's revocation
		// commits its marks first.
		newClient(t, kc, kgo.ConsumerGroup("handover"), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
		select {
		case <-revoked:
		case <-time.After(time.Minute):
			t.Fatal("no partition was revoked from the first member")
		}
		if !caughtUp("handover") {
			t.Fatal("the revocation did not commit the marks")
		}
		if err := kafka.CommitMarked(a); err != nil {
			t.Fatalf("CommitMarked: %v", err)
		}
	})
}
