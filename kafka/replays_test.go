package kafka_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/kafka"
)

// fetch is one partition's records from offset from to to (not included).
func fetch(topic string, p int32, from, to int64) kgo.Fetch {
	fp := kgo.FetchPartition{Partition: p}
	for o := from; o < to; o++ {
		fp.Records = append(fp.Records, &kgo.Record{Topic: topic, Partition: p, Offset: o})
	}
	return kgo.Fetch{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{fp}}}}
}

// offsets lists what fetches hold, by "topic/partition".
func offsets(fs kgo.Fetches) map[string][]int64 {
	got := map[string][]int64{}
	fs.EachRecord(func(r *kgo.Record) {
		k := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
		got[k] = append(got[k], r.Offset)
	})
	return got
}

// TestReplays: a consumer's records below those it handed on before are
// taken out, a rewind between two fetches of one poll included, by topic
// and partition; a partition it let go of keeps everything again.
func TestReplays(t *testing.T) {
	var r kafka.Replays
	var runs []string
	skipped := func(topic string, p int32, from, next int64, n int) {
		runs = append(runs, fmt.Sprintf("%s/%d %d<%d: %d", topic, p, from, next, n))
	}
	poll := func(want map[string][]int64, wantRuns []string, fetches ...kgo.Fetch) {
		t.Helper()
		runs = nil
		fs := kgo.Fetches(fetches)
		r.Skip(fs, skipped)
		if got := offsets(fs); !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("kept %v, want %v", got, want)
		}
		if !slices.Equal(runs, wantRuns) {
			t.Fatalf("skipped %q, want %q", runs, wantRuns)
		}
	}
	poll(map[string][]int64{"a/0": {0, 1, 2}, "b/0": {5, 6}}, nil,
		fetch("a", 0, 0, 3), fetch("b", 0, 5, 7))
	poll(map[string][]int64{"a/0": {3, 4}, "a/1": {0, 1}, "b/0": {7}}, []string{"a/0 0<3: 3", "a/0 1<5: 4", "b/0 6<7: 1"},
		fetch("a", 0, 0, 5), // back to the start
		fetch("a", 1, 0, 2),
		fetch("a", 0, 1, 5), // and again within the poll
		fetch("b", 0, 6, 8))
	r.Forget(map[string][]int32{"a": {0}})
	poll(map[string][]int64{"a/0": {0, 1}}, []string{"a/1 0<2: 2"},
		fetch("a", 0, 0, 2), // from the committed offsets of a new assignment
		fetch("a", 1, 0, 2))
}

// TestSkipReplays: what the consumer says it handled bounds each partition
// from below; a partition it knows nothing of keeps everything.
func TestSkipReplays(t *testing.T) {
	fs := kgo.Fetches{fetch("a", 0, 8, 12), fetch("a", 1, 0, 3), fetch("b", 0, 9, 11)}
	handled := map[string]int64{"a/0": 10, "b/0": 9}
	n := 0
	kafka.SkipReplays(fs, func(topic string, p int32) (int64, bool) {
		next, ok := handled[fmt.Sprintf("%s/%d", topic, p)]
		return next, ok
	}, func(_ string, _ int32, _, _ int64, k int) { n += k })
	want := map[string][]int64{"a/0": {10, 11}, "a/1": {0, 1, 2}, "b/0": {9, 10}}
	if got := offsets(fs); !maps.EqualFunc(got, want, slices.Equal) || n != 2 {
		t.Fatalf("kept %v (%d taken out), want %v (2)", got, n, want)
	}
}
