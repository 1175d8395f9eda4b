package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec is one topic EnsureTopics creates.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// TopicSpecs returns the topics Parley needs under c, with their partition
// counts and configs: the state changelog compacted, every other topic with
// an explicit retention.
func (c Config) TopicSpecs() []TopicSpec {
	c = c.WithDefaults()
	t := c.Topics()
	retention := func(d time.Duration) map[string]*string {
		ms := "-1"
		if d > 0 {
			ms = strconv.FormatInt(d.Milliseconds(), 10)
		}
		return map[string]*string{"cleanup.policy": kadm.StringPtr("delete"), "retention.ms": kadm.StringPtr(ms)}
	}
	return []TopicSpec{
		{Name: t.Commands, Partitions: c.Partitions, Configs: retention(c.CommandsRetention)},
		{Name: t.Events, Partitions: c.Partitions, Configs: retention(c.EventsRetention)},
		{Name: t.Outcomes, Partitions: c.OutcomesPartitions, Configs: retention(c.OutcomesRetention)},
		{Name: t.SequencerState, Partitions: c.Partitions, Configs: map[string]*string{
			"cleanup.policy": kadm.StringPtr("compact"),
			// Keep tombstones long enough for a restoring sequencer that
			// started reading before compaction to see them.
			"delete.retention.ms": kadm.StringPtr(strconv.FormatInt((24 * time.Hour).Milliseconds(), 10)),
		}},
		{Name: t.Presence, Partitions: c.Partitions, Configs: map[string]*string{
			"cleanup.policy": kadm.StringPtr("compact"),
			// A fanout instance reads the whole topic when it starts; an
			// hour lets tombstones of closed sessions reach every reader.
			"delete.retention.ms": kadm.StringPtr(strconv.FormatInt(time.Hour.Milliseconds(), 10)),
		}},
		{Name: t.Ephemeral, Partitions: c.Partitions, Configs: retention(time.Minute)},
		{Name: t.Notifications, Partitions: c.Partitions, Configs: retention(c.NotificationsRetention)},
	}
}

// EnsureTopics creates any of Parley's topics that do not exist yet and
// checks that the commands and sequencer-state topics have the same
// partition count (the sequencer's state is co-partitioned with its input).
// Existing topics are left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, c Config) error {
	c = c.WithDefaults()
	adm := kadm.NewClient(cl)
	for _, spec := range c.TopicSpecs() {
		resp, err := adm.CreateTopic(ctx, spec.Partitions, c.ReplicationFactor, spec.Configs, spec.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", spec.Name, err)
		}
	}
	t := c.Topics()
	details, err := adm.ListTopics(ctx, t.Commands, t.SequencerState)
	if err != nil {
		return fmt.Errorf("kafka: list topics: %w", err)
	}
	nc, ns := len(details[t.Commands].Partitions), len(details[t.SequencerState].Partitions)
	if nc == 0 || nc != ns {
		return fmt.Errorf("kafka: %s has %d partitions and %s has %d: they must be equal and non-zero", t.Commands, nc, t.SequencerState, ns)
	}
	return nil
}

// PartitionCount returns the number of partitions of topic.
func PartitionCount(ctx context.Context, cl *kgo.Client, topic string) (int32, error) {
	d, err := describeTopic(ctx, cl, topic)
	if err == nil && len(d.Partitions) == 0 {
		err = fmt.Errorf("kafka: topic %s does not exist", topic)
	}
	if err != nil {
		return 0, err
	}
	return int32(len(d.Partitions)), nil
}

// describeTopic returns the broker's metadata of topic.
func describeTopic(ctx context.Context, cl *kgo.Client, topic string) (kadm.TopicDetail, error) {
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return kadm.TopicDetail{}, err
	}
	d, ok := details[topic]
	switch {
	case ok && d.Err != nil:
		return d, fmt.Errorf("kafka: topic %s: %w", topic, d.Err)
	case !ok:
		return d, fmt.Errorf("kafka: topic %s does not exist", topic)
	}
	return d, nil
}

// DeleteRetention returns topic's delete.retention.ms as the broker
// describes it (its own default where the topic sets none): how long a
// compacted topic keeps a tombstone once the partition is cleaned, so how
// long a reader may lag and still see every deletion.
func DeleteRetention(ctx context.Context, cl *kgo.Client, topic string) (time.Duration, error) {
	const key = "delete.retention.ms"
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: describe %s: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: describe %s: %w", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key != key || c.Value == nil {
			continue
		}
		ms, err := strconv.ParseInt(*c.Value, 10, 64)
		if err != nil || ms < 0 {
			return 0, fmt.Errorf("kafka: %s of %s is %q, not a count of milliseconds", key, topic, *c.Value)
		}
		return time.Duration(min(ms, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond, nil
	}
	return 0, fmt.Errorf("kafka: the broker describes no %s for %s", key, topic)
}

// TopicID returns topic's id, which changes when the topic is deleted and
// made again under the same name (an error where the broker gives none).
func TopicID(ctx context.Context, cl *kgo.Client, topic string) (string, error) {
	d, err := describeTopic(ctx, cl, topic)
	if err == nil && d.ID == (kadm.TopicID{}) {
		err = fmt.Errorf("kafka: the broker gives topic %s no id", topic)
	}
	if err != nil {
		return "", err
	}
	return d.ID.String(), nil
}
