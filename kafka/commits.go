package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// CommitInterval is how often the consumers of the events topic (the
// writer and fanout) commit the offsets of the records they have finished
// with, by default. Committing after every batch put a commit round trip
// in front of every next poll, and at 2,000 msgs/s the commits were about
// a tenth of all broker requests. A crash now redoes about this much, which
// both roles absorb: the store takes an event it holds again, and clients
// drop a push they already have.
const CommitInterval = time.Second

// MinCommitInterval is the shortest interval MarkedCommits takes (franz-go
// refuses a shorter one).
const MinCommitInterval = 100 * time.Millisecond

// MarkedCommits returns the group options of a consumer that marks the
// records it has finished with (kgo.Client.MarkCommitRecords) and has them
// committed in the background every interval, and before its partitions
// are revoked, so that the next owner starts after them; revoked, the
// consumer's own cleanup, runs after that commit, and failed is told of a
// commit that failed there (the next owner then redoes those records).
// Closing the client leaves the group, which revokes every partition: a
// clean shutdown commits what was marked.
func MarkedCommits(interval time.Duration, revoked func(context.Context, *kgo.Client, map[string][]int32), failed func(error)) []kgo.Opt {
	return []kgo.Opt{
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(interval),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
			if err := CommitMarked(cl); err != nil {
				failed(err)
			}
			revoked(ctx, cl, lost)
		}),
	}
}

// CommitMarked commits the offsets marked on cl now, waiting up to 10 s.
func CommitMarked(cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.CommitMarkedOffsets(ctx)
}
