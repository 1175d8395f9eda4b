package connector

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// CommanderConfig configures a Commander.
type CommanderConfig struct {
	Kafka kafka.Config
	// NodeID names this connector; outcomes are addressed to it. Required;
	// unique among the connectors sharing a reply partition.
	NodeID string
	// ReplyPartition is the partition of parley.outcomes this node reads;
	// default murmur2(NodeID) over the topic's partitions.
	ReplyPartition *int32
	// ReplyTimeout bounds the wait for an outcome; default 10s.
	ReplyTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the metrics of the commander's Kafka clients
	// (parley_kafka_*{role="connector"}); nil: none.
	Registerer prometheus.Registerer
	// Now returns the time; default time.Now.
	Now func() time.Time
}

// Commander sends commands and waits for their outcomes. Methods are safe
// for concurrent use; Run must be running for a command to get anything but
// ErrUnavailable.
type Commander struct {
	cfg       CommanderConfig
	topics    schema.Topics // cfg.Kafka.Topics(), named once
	log       *slog.Logger
	producer  *kgo.Client
	partition int32
	ready     chan struct{} // closed once the outcome consumer is positioned
	readyOnce sync.Once
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	swept     chan struct{} // closed when the sweep has stopped

	shards [64]pendingShard
	seed   maphash.Seed
	late   atomic.Int64

	produced func(*kgo.Record, error) // c.onProduced, bound once
}

// Late returns how many outcomes arrived after their command had ended
// otherwise (timed out, refused by the log, or failed by Close).
func (c *Commander) Late() int64 { return c.late.Load() }

// pending is a command awaiting its outcome.
type pending struct {
	done     func(*parleyv1.Outcome, error)
	deadline int64 // UnixNano: given up after
}

type pendingShard struct {
	mu      sync.Mutex
	waiters map[string]pending
}

// NewCommander connects to the cluster; Run starts reading outcomes.
func NewCommander(ctx context.Context, cfg CommanderConfig) (*Commander, error) {
	cfg.Kafka = cfg.Kafka.WithDefaults()
	if !schema.ValidNodeID(cfg.NodeID) {
		return nil, errors.New("connector: NodeID must be 1-128 characters of [A-Za-z0-9_.-]")
	}
	if cfg.ReplyTimeout == 0 {
		cfg.ReplyTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Kafka.Validate(); err != nil {
		return nil, err
	}
	producer, err := kgo.NewClient(cfg.Kafka.ClientOpts(append(metrics.KafkaClient(cfg.Registerer, "connector", "commands"),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		// A command that cannot reach the log within the reply timeout
		// fails, and the client is told so.
		kgo.RecordDeliveryTimeout(max(cfg.ReplyTimeout, time.Second)),
	)...)...)
	if err != nil {
		return nil, err
	}
	c := &Commander{cfg: cfg, topics: cfg.Kafka.Topics(), log: cfg.Logger.With("role", "connector", "node", cfg.NodeID), producer: producer,
		ready: make(chan struct{}), closed: make(chan struct{}), swept: make(chan struct{}), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].waiters = make(map[string]pending)
	}
	c.produced = c.onProduced
	if err := kafka.EnsureTopics(ctx, producer, cfg.Kafka); err != nil {
		producer.Close()
		return nil, err
	}
	if cfg.ReplyPartition != nil {
		c.partition = *cfg.ReplyPartition
	} else {
		n, err := kafka.PartitionCount(ctx, producer, c.topics.Outcomes)
		if err != nil {
			producer.Close()
			return nil, err
		}
		c.partition = kafka.KeyPartition([]byte(cfg.NodeID), n)
	}
	go c.sweep()
	return c, nil
}

// Close releases the producer and fails the commands still waiting for
// their outcome as unavailable; Run must have returned.
func (c *Commander) Close() {
	c.closeOnce.Do(c.close)
}

func (c *Commander) close() {
	close(c.closed)
	<-c.swept
	c.producer.Close()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		left := sh.waiters
		sh.waiters = make(map[string]pending)
		sh.mu.Unlock()
		for _, p := range left {
			p.done(nil, fmt.Errorf("%w: the connector is shutting down", ErrUnavailable))
		}
	}
}

// Ping reports whether the log's cluster answers (a broker responds to a
// metadata request through the commander's own client).
func (c *Commander) Ping(ctx context.Context) error { return c.producer.Ping(ctx) }

// Ready is closed once Run reads outcomes.
func (c *Commander) Ready() <-chan struct{} { return c.ready }

func (c *Commander) shard(msgID string) *pendingShard {
	return &c.shards[maphash.String(c.seed, msgID)%uint64(len(c.shards))]
}

// Do is Submit waiting for the outcome, or for ctx to end (an error
// wrapping ErrUnavailable; the command may still be sequenced).
func (c *Commander) Do(ctx context.Context, cmd *parleyv1.Command) (*parleyv1.Outcome, error) {
	type result struct {
		o   *parleyv1.Outcome
		err error
	}
	ch := make(chan result, 1)
	c.Submit(cmd, func(o *parleyv1.Outcome, err error) { ch <- result{o, err} })
	select {
	case r := <-ch:
		return r.o, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// Submit sends cmd and calls done once with its outcome: SEQUENCED,
// DUPLICATE or UNCHANGED, a *RejectedError, or an error wrapping
// ErrUnavailable (the log did not take the command, no outcome came within
// the reply timeout, or the commander closed). It fills in msg_id (a new
// KSUID), ts and reply_to; the caller sets conv, from, cmid and the body.
//
// The outcome shares the memory of the record it came in
// (schema.DecodeOutcomeBatch): what outlives done should be copied, or it
// keeps the whole record alive.
//
// Submit does not wait: a command holds no goroutine while it waits for
// its outcome. done runs on the outcome reader, the timeout sweep or
// Close, on a goroutine of its own when the log refused the command, or on
// the caller's when the command cannot be encoded; so it must not block.
// It may submit another command. A command with no outcome is given up
// between one and one and an eighth reply timeouts after it was sent; one
// submitted while Close runs is failed by the closed producer, possibly
// after Close returned.
func (c *Commander) Submit(cmd *parleyv1.Command, done func(*parleyv1.Outcome, error)) {
	select {
	case <-c.ready: // nearly always
		c.submit(cmd, done)
		return
	default:
	}
	// Just after the start: wait for the outcome reader, off the caller's
	// goroutine.
	go func() {
		wait := time.NewTimer(c.cfg.ReplyTimeout)
		defer wait.Stop()
		select {
		case <-c.ready:
			c.submit(cmd, done)
		case <-wait.C:
			done(nil, fmt.Errorf("%w: not reading outcomes yet", ErrUnavailable))
		case <-c.closed:
			done(nil, fmt.Errorf("%w: the connector is shutting down", ErrUnavailable))
		}
	}()
}

func (c *Commander) submit(cmd *parleyv1.Command, done func(*parleyv1.Outcome, error)) {
	cmd.MsgId = schema.NewID()
	cmd.Ts = c.cfg.Now().UnixMilli()
	cmd.ReplyTo = &parleyv1.ReplyTo{Node: c.cfg.NodeID, Partition: c.partition}
	// The record's key and value in one allocation.
	k := len(cmd.Conv)
	kv := make([]byte, k+cmd.SizeVT())
	copy(kv, cmd.Conv)
	if _, err := cmd.MarshalToSizedBufferVT(kv[k:]); err != nil {
		done(nil, fmt.Errorf("connector: encode command: %w", err))
		return
	}
	id := cmd.MsgId
	sh := c.shard(id)
	sh.mu.Lock()
	sh.waiters[id] = pending{done: done, deadline: time.Now().Add(c.cfg.ReplyTimeout).UnixNano()}
	sh.mu.Unlock()
	// TryProduce does not wait for buffer space: with the producer's buffer
	// full the command fails as unavailable at once, and the client retries
	// later.
	c.producer.TryProduce(context.Background(), &kgo.Record{Topic: c.topics.Commands, Key: kv[:k:k], Value: kv[k:]}, c.produced)
}

// onProduced hears whether the log took a command's record. One callback
// serves every record (a closure per command was an allocation per
// message): the command is found again by the msg_id in the record, read
// only when the record failed.
func (c *Commander) onProduced(r *kgo.Record, err error) {
	if err == nil {
		return // the outcome follows (or came first)
	}
	cmd, derr := schema.DecodeCommand(r.Value)
	if derr != nil {
		// This node encoded it: it cannot be undecodable. Its command
		// times out.
		c.log.Error("a command record that failed does not decode", "err", derr)
		return
	}
	if p, ok := c.take(cmd.MsgId); ok {
		// Off the producer's promise goroutine, which must not wait on
		// anything done might do (such as producing).
		go p.done(nil, fmt.Errorf("%w: the log did not take the command: %v", ErrUnavailable, err))
	}
}

// take removes and returns the command waiting under msgID, if any: the
// one place a pending command is ended, so done runs exactly once.
func (c *Commander) take(msgID string) (pending, bool) {
	sh := c.shard(msgID)
	sh.mu.Lock()
	p, ok := sh.waiters[msgID]
	if ok {
		delete(sh.waiters, msgID)
	}
	sh.mu.Unlock()
	return p, ok
}

// sweep fails the commands whose outcome has not come within the reply
// timeout, a few times a timeout, until Close.
func (c *Commander) sweep() {
	defer close(c.swept)
	t := time.NewTicker(max(c.cfg.ReplyTimeout/8, time.Millisecond))
	defer t.Stop()
	var expired []pending
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		for i := range c.shards {
			sh := &c.shards[i]
			sh.mu.Lock()
			for id, p := range sh.waiters {
				if now > p.deadline {
					delete(sh.waiters, id)
					expired = append(expired, p)
				}
			}
			sh.mu.Unlock()
		}
		for _, p := range expired {
			p.done(nil, fmt.Errorf("%w: no outcome within %v", ErrUnavailable, c.cfg.ReplyTimeout))
		}
		clear(expired)
		expired = expired[:0]
	}
}

// decodeOutcomeBatch decodes a record of this node's outcomes partition:
// the outcomes it holds for node, or none for a record of another node
// sharing the partition. The error wraps schema.ErrUndecodable, or
// schema.ErrMalformed for a batch addressed to another node than its key.
func decodeOutcomeBatch(node string, key, value []byte) ([]*parleyv1.Outcome, error) {
	if string(key) != node {
		return nil, nil // another connector sharing the partition
	}
	b, err := schema.DecodeOutcomeBatch(value)
	if err != nil {
		return nil, err
	}
	if b.Node != node {
		return nil, fmt.Errorf("%w: a batch for node %q under the key of %q", schema.ErrMalformed, schema.Clip(b.Node), node)
	}
	return b.Outcomes, nil
}

func outcome(o *parleyv1.Outcome) (*parleyv1.Outcome, error) {
	if o.Status == parleyv1.OutcomeStatus_OUTCOME_STATUS_REJECTED {
		// Copied: an error may be kept, and o shares its record's memory.
		return o, &RejectedError{Reason: o.Reason, Message: strings.Clone(o.Message)}
	}
	return o, nil
}

// Run reads this node's outcomes and hands each to the command waiting for it,
// until ctx ends. It starts at the partition's end: outcomes of commands
// sent before Run was ready are not waited for by anyone.
func (c *Commander) Run(ctx context.Context) error {
	topic := c.topics.Outcomes
	ends, err := kadm.NewClient(c.producer).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("connector: find the end of %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, c.partition)
	if !ok {
		return fmt.Errorf("connector: %s has no partition %d", topic, c.partition)
	}
	cl, err := kgo.NewClient(c.cfg.Kafka.ClientOpts(append(metrics.KafkaClient(c.cfg.Registerer, "connector", "outcomes"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {c.partition: kgo.NewOffset().At(end.Offset)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	c.readyOnce.Do(func() { close(c.ready) })
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			c.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			outs, err := decodeOutcomeBatch(c.cfg.NodeID, r.Key, r.Value)
			if err != nil {
				c.log.Warn("skipping an outcome record", "offset", r.Offset, "reason", schema.SkipReason(err), "err", err)
				return
			}
			for _, o := range outs {
				p, ok := c.take(o.MsgId)
				if !ok {
					c.late.Add(1) // ended otherwise (timeout): the client retries
					continue
				}
				p.done(outcome(o))
			}
		})
	}
}

// typing produces a typing signal without blocking: it is ephemeral, and a
// lost one matters to nobody.
func (c *Commander) typing(conv, from string) {
	v, err := proto.Marshal(&parleyv1.Typing{Conv: conv, From: from, Ts: c.cfg.Now().UnixMilli()})
	if err != nil {
		return
	}
	c.producer.TryProduce(context.Background(), &kgo.Record{Topic: c.topics.Ephemeral, Key: []byte(conv), Value: v}, func(_ *kgo.Record, err error) {
		if err != nil {
			c.log.Debug("typing signal lost", "conv", conv, "err", err)
		}
	})
}
