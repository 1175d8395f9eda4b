package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parley-im/parley/schema"
)

// Config says how to reach the cluster and how Parley's topics are laid out.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// TopicPrefix is prepended to every topic name; default "parley.".
	TopicPrefix string
	// ClientID names this process to the brokers; default "parley".
	ClientID string
	// Logger receives the client's warnings and errors; default slog.Default().
	Logger *slog.Logger
	// Dial, if set, opens the clients' connections to brokers (TLS, a
	// proxy, or a test's fault injection); default a plain TCP dial.
	Dial func(ctx context.Context, network, host string) (net.Conn, error)

	// Partitions is the partition count EnsureTopics gives new topics; default 16.
	// The commands and sequencer-state topics must keep equal counts.
	Partitions int32
	// ReplicationFactor for new topics; default -1 (the broker's default).
	ReplicationFactor int16
	// OutcomesPartitions is the partition count of the outcomes topic; default
	// Partitions.
	OutcomesPartitions int32
	// EventsRetention is how long events are kept; 0 means forever (the
	// events topic is the system of record).
	EventsRetention time.Duration
	// CommandsRetention is how long commands are kept; default 7 days.
	CommandsRetention time.Duration
	// OutcomesRetention is how long outcomes are kept; default 1 hour
	// (they only answer waiting clients).
	OutcomesRetention time.Duration
	// NotificationsRetention is how long notification records are kept;
	// default 1 day.
	NotificationsRetention time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.TopicPrefix == "" {
		c.TopicPrefix = schema.DefaultTopicPrefix
	}
	if c.ClientID == "" {
		c.ClientID = "parley"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.OutcomesPartitions == 0 {
		c.OutcomesPartitions = c.Partitions
	}
	if c.CommandsRetention == 0 {
		c.CommandsRetention = 7 * 24 * time.Hour
	}
	if c.NotificationsRetention == 0 {
		c.NotificationsRetention = 24 * time.Hour
	}
	if c.OutcomesRetention == 0 {
		c.OutcomesRetention = time.Hour
	}
	return c
}

// Validate rejects a configuration that cannot work.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: no brokers configured")
	}
	if c.Partitions < 1 || c.OutcomesPartitions < 1 {
		return fmt.Errorf("kafka: partitions must be positive (got %d, outcomes %d)", c.Partitions, c.OutcomesPartitions)
	}
	if c.EventsRetention < 0 || c.CommandsRetention < 0 || c.OutcomesRetention < 0 || c.NotificationsRetention < 0 {
		return errors.New("kafka: retention must not be negative")
	}
	return nil
}

// Topics returns the topic names under this configuration's prefix.
func (c Config) Topics() schema.Topics { return schema.TopicNames(c.TopicPrefix) }

// ClientOpts returns the options every Parley client starts from: seed
// brokers, client id, logging, and the shared partitioner. Callers append
// role-specific options.
func (c Config) ClientOpts(extra ...kgo.Opt) []kgo.Opt {
	c = c.WithDefaults()
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.WithLogger(newLogger(c.Logger)),
		kgo.RecordPartitioner(Partitioner(c.Topics())),
		// A broker answers a fetch as soon as data arrives; the embedded one
		// sometimes misses that after a restart, so do not let an idle long
		// poll last longer than this.
		kgo.FetchMaxWait(time.Second),
	}
	if c.Dial != nil {
		opts = append(opts, kgo.Dialer(c.Dial))
	}
	return append(opts, extra...)
}
