package writer_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/writer"
)

// TestWriterCommitsAtShutdown: the writer commits the offsets of what it
// stored when it stops, so that a clean restart replays nothing, however
// far off its next periodic commit is.
func TestWriterCommitsAtShutdown(t *testing.T) {
	kc, _ := seedEvents(t)
	cl, err := kgo.NewClient(kc.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const group = "shutdown-test"
	w, err := writer.New(writer.Config{Kafka: kc, Group: group, CommitInterval: time.Hour, Logger: quiet()}, openPebble(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	testutil.WaitFor(t, time.Minute, "every event stored", func() bool { n, _ := w.Stored(); return n == rbConvs*rbEvents })
	if testutil.GroupCaughtUp(cl, group, kc.Topics().Events) {
		t.Fatal("offsets committed before the interval or a shutdown")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !testutil.GroupCaughtUp(cl, group, kc.Topics().Events) {
		t.Fatal("the writer stopped without committing what it stored")
	}
	if _, err := writer.New(writer.Config{Kafka: kc, CommitInterval: 50 * time.Millisecond}, openPebble(t)); err == nil {
		t.Fatal("a commit interval under kafka.MinCommitInterval was taken")
	}
}
