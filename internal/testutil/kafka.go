package testutil

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupCaughtUp reports whether group has committed offsets at the end of
// every partition of topic. The end of a topic written in transactions may
// be a transaction marker one past the last record, which a consumer never
// commits past, so one short of the end counts as caught up.
func GroupCaughtUp(cl *kgo.Client, group, topic string) bool {
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false
	}
	caught := true
	ends.Each(func(e kadm.ListedOffset) {
		if e.Offset == 0 {
			return
		}
		o, ok := committed.Lookup(topic, e.Partition)
		if !ok || o.At < e.Offset-1 {
			caught = false
		}
	})
	return caught
}
