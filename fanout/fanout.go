// Package fanout is the fanout role: a consumer group on the events topic
// (and the ephemeral typing topic) that pushes each event to the connector
// nodes holding its recipients' devices.
//
// For each poll it brings its presence view up to date (presence.proto),
// resolves every event's recipients (the conversation's members, from a
// cache kept in step with member events), groups the pushes by node, and
// posts one PushBatch per node to that node's push endpoint, all nodes at
// once; the next poll waits for these posts, so one conversation's events
// reach a node in seq order. Message events for a recipient with no live
// device go to the notifications topic. Offsets are committed after the
// pushes (every Config.CommitInterval): delivery is at least once, and a
// push that fails is dropped and its node skipped until its next heartbeat
// (the client recovers the events through its gap detection and history).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// Push endpoint of the connector; see schema/parley/v1/push.proto.
const (
	pushPath         = "/internal/push"
	pushSecretHeader = "X-Parley-Push-Secret"
)

// Config configures a Fanout.
type Config struct {
	Kafka kafka.Config
	// Group is the consumer group; default "parley-fanout".
	Group string
	// InstanceID names this instance in the pushes it sends; default
	// "fanout".
	InstanceID string
	// PushSecret is the connectors' shared push secret. Required.
	PushSecret []byte
	// PushTimeout bounds one push request; default 5s.
	PushTimeout time.Duration
	// MaxBatch caps the records handled per poll; default 5,000.
	MaxBatch int
	// CachedConversations bounds the membership cache; default 100,000.
	CachedConversations int
	// StoreWait bounds, per poll, the wait for the store to catch up when
	// conversations' members are loaded; default 2s.
	StoreWait time.Duration
	// TypingTTL: typing signals older than this are dropped; default 5s.
	TypingTTL time.Duration
	// CommitInterval is how often the offsets of the records pushed are
	// committed (and before a rebalance, and at a clean shutdown); default
	// kafka.CommitInterval. A crash pushes what was pushed since again.
	CommitInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes fanout's metrics (parley_fanout_*, and
	// parley_store_*, parley_consumer_lag and parley_records_skipped_total
	// with role="fanout", and its Kafka clients'); nil: a private registry
	// nobody scrapes.
	Registerer prometheus.Registerer
	// Now returns the time; default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Kafka = c.Kafka.WithDefaults()
	if c.Group == "" {
		c.Group = "parley-fanout"
	}
	if c.InstanceID == "" {
		c.InstanceID = "fanout"
	}
	if c.PushTimeout == 0 {
		c.PushTimeout = 5 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 5000
	}
	if c.CachedConversations == 0 {
		c.CachedConversations = 100_000
	}
	if c.StoreWait == 0 {
		c.StoreWait = 2 * time.Second
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = kafka.CommitInterval
	}
	if c.TypingTTL == 0 {
		c.TypingTTL = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Stats counts what a Fanout did.
type Stats struct {
	// Pushes: events and typing signals sent to nodes (one per node they
	// went to); Failed: pushes whose request failed and were dropped.
	Pushes, Failed int64
	// Notifications written for offline recipients, and those the log
	// did not take (dropped).
	Notifications, NotificationsLost int64
}

// Fanout is the fanout role.
type Fanout struct {
	cfg     Config
	log     *slog.Logger
	members *members
	http    *fasthttp.Client

	view atomic.Pointer[presenceView] // while Run runs

	pushes, failed, notified atomic.Int64
	notifyFailed, notifyLost atomic.Int64 // this poll's failures; all so far
	skipped                  *metrics.Skipped
	replays                  kafka.Replays
	m                        fanoutMetrics
}

// fanoutMetrics are fanout's Prometheus metrics; the counters above count
// the same for Stats.
type fanoutMetrics struct {
	events, notified, notifyLost prometheus.Counter
	pushes, failures             *prometheus.CounterVec // by node
	lag                          *metrics.Lag
}

func newFanoutMetrics(reg prometheus.Registerer, group string) (m fanoutMetrics, err error) {
	counter := func(name, help string) prometheus.Counter {
		if err != nil {
			return nil
		}
		var c prometheus.Counter
		c, err = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
		return c
	}
	byNode := func(name, help string) *prometheus.CounterVec {
		if err != nil {
			return nil
		}
		var c *prometheus.CounterVec
		c, err = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"node"}))
		return c
	}
	m.events = counter("parley_fanout_events_total", "Events read from the events topic and routed to their recipients.")
	m.notified = counter("parley_fanout_notifications_total", "Notifications written for offline recipients.")
	m.notifyLost = counter("parley_fanout_notifications_lost_total", "Notifications the log did not take, dropped.")
	m.pushes = byNode("parley_fanout_pushes_total", "Events and typing signals pushed to a connector node, by node.")
	m.failures = byNode("parley_fanout_push_failures_total", "Events and typing signals whose push to a connector node failed and were dropped, by node (the devices recover them through history).")
	if err == nil {
		m.lag, err = metrics.NewLag(reg, "fanout", group)
	}
	return m, err
}

// New returns a Fanout that reads memberships from st; Run starts it.
func New(cfg Config, st store.Store) (*Fanout, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Kafka.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.PushSecret) < 16 {
		return nil, errors.New("fanout: the push secret must be at least 16 bytes")
	}
	if st == nil {
		return nil, errors.New("fanout: no store")
	}
	if cfg.MaxBatch < 1 || cfg.CachedConversations < 1 {
		return nil, errors.New("fanout: MaxBatch and CachedConversations must be positive")
	}
	if cfg.CommitInterval < kafka.MinCommitInterval {
		return nil, fmt.Errorf("fanout: CommitInterval must be at least %v", kafka.MinCommitInterval)
	}
	t := cfg.Kafka.Topics()
	skipped, err := metrics.NewSkipped(cfg.Registerer, "fanout", t.Events, t.Ephemeral, t.Presence)
	if err != nil {
		return nil, fmt.Errorf("fanout: metrics: %w", err)
	}
	m, err := newFanoutMetrics(cfg.Registerer, cfg.Group)
	if err == nil {
		st, err = metrics.InstrumentStore(cfg.Registerer, "fanout", st)
	}
	if err != nil {
		return nil, fmt.Errorf("fanout: metrics: %w", err)
	}
	return &Fanout{
		cfg:     cfg,
		skipped: skipped,
		m:       m,
		log:     cfg.Logger.With("role", "fanout"),
		members: newMembers(st, cfg.CachedConversations),
		http: &fasthttp.Client{
			Name:                     "parley-fanout",
			ReadTimeout:              cfg.PushTimeout,
			WriteTimeout:             cfg.PushTimeout,
			MaxIdleConnDuration:      time.Minute,
			NoDefaultUserAgentHeader: true,
		},
	}, nil
}

// Stats returns the counters so far.
func (f *Fanout) Stats() Stats {
	return Stats{Pushes: f.pushes.Load(), Failed: f.failed.Load(), Notifications: f.notified.Load(), NotificationsLost: f.notifyLost.Load()}
}

// Skipped returns the number of records of topic skipped for reason (one
// of schema.SkipReasons): parley_records_skipped_total{role="fanout"}.
func (f *Fanout) Skipped(topic, reason string) int64 { return f.skipped.Count(topic, reason) }

// NodeAlive reports whether fanout currently pushes to the connector node
// id (false when Run is not running).
func (f *Fanout) NodeAlive(id string) bool {
	v := f.view.Load()
	return v != nil && v.alive(id)
}

// Run pushes until ctx ends.
func (f *Fanout) Run(ctx context.Context) error {
	t := f.cfg.Kafka.Topics()
	setup, err := kgo.NewClient(f.cfg.Kafka.ClientOpts()...)
	if err != nil {
		return err
	}
	err = kafka.EnsureTopics(ctx, setup, f.cfg.Kafka)
	setup.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop
		}
		return err
	}
	view, err := newPresenceView(f.cfg.Kafka.ClientOpts(metrics.KafkaClient(f.cfg.Registerer, "fanout", "presence")...), t.Presence, f.cfg.Now, f.log, func(reason string) { f.skipped.Add(t.Presence, reason) })
	if err != nil {
		return err
	}
	// A node that shut down cleanly takes its push series with it: node
	// ids change with restarts, and the series would pile up.
	view.gone = func(node string) {
		f.m.pushes.DeleteLabelValues(node)
		f.m.failures.DeleteLabelValues(node)
	}
	defer view.close()
	f.view.Store(view)
	defer f.view.Store(nil)
	vctx, stopView := context.WithCancel(ctx)
	viewDone := make(chan error, 1)
	go func() { viewDone <- view.run(vctx) }()
	defer func() { stopView(); <-viewDone }()

	// Another instance may have applied member events this one has not
	// seen: a rebalance starts the cache afresh.
	clearMembers := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		f.replays.Forget(lost)
		f.members.clear()
	}
	opts := append(metrics.KafkaClient(f.cfg.Registerer, "fanout", "events"),
		kgo.ConsumerGroup(f.cfg.Group),
		kgo.ConsumeTopics(t.Events, t.Ephemeral),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(10*time.Second),
		kgo.OnPartitionsLost(clearMembers),
		// The notifications producer.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(10*time.Second),
	)
	opts = append(opts, kafka.MarkedCommits(f.cfg.CommitInterval, clearMembers, func(err error) {
		f.log.Warn("offset commit before a rebalance failed", "err", err)
	})...)
	cl, err := kgo.NewClient(f.cfg.Kafka.ClientOpts(opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	f.m.lag.Watch(cl)
	defer f.m.lag.Watch(nil)

	for {
		fetches := cl.PollRecords(ctx, f.cfg.MaxBatch)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			f.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		f.replays.Skip(fetches, f.skipped.Replays(f.log))
		if recs := fetches.Records(); len(recs) > 0 {
			if err := f.handle(ctx, cl, view, recs); err != nil {
				cl.AllowRebalance()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// Committed within CommitInterval, and before the partitions
			// are revoked, as they are when Close leaves the group at a
			// clean shutdown (kafka.MarkedCommits); a crash before that
			// pushes them again, and clients drop what they hold.
			cl.MarkCommitRecords(recs...)
		}
		cl.AllowRebalance()
	}
}

// nodeBatch is what one poll pushes to one node.
type nodeBatch struct {
	addr   string
	pushes []*parleyv1.Push
}

// handle pushes one poll's records and writes their notifications.
func (f *Fanout) handle(ctx context.Context, cl *kgo.Client, view *presenceView, recs []*kgo.Record) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := view.sync(sctx)
	cancel()
	if err != nil {
		// Push with what the view holds: a device it misses recovers
		// through history.
		f.log.Warn("presence view not brought up to date", "err", err)
	}
	t := f.cfg.Kafka.Topics()
	waitUntil := time.Now().Add(f.cfg.StoreWait)
	batches := make(map[string]*nodeBatch)
	// A busy conversation's events in a poll share their recipients' list
	// (members.recipients), and then their route: it is worked out once.
	// The view may change meanwhile, but every event of the poll was
	// sequenced before the sync above, so what it then held is what they
	// need (a node that dies within the poll may still be pushed to: the
	// push fails, and its devices recover through history).
	var (
		routed  []string
		live    []nodeUsers
		offline []string
	)
	add := func(p *parleyv1.Push, users []string) []string {
		if len(users) == 0 || len(users) != len(routed) || &users[0] != &routed[0] {
			live, offline = view.route(users)
			routed = users
		}
		for _, n := range live {
			b := batches[n.id]
			if b == nil {
				b = &nodeBatch{addr: n.pushAddr}
				batches[n.id] = b
			}
			b.pushes = append(b.pushes, &parleyv1.Push{Event: p.Event, Typing: p.Typing, Users: n.users})
		}
		return offline
	}
	var notes []*kgo.Record
	for _, r := range recs {
		switch r.Topic {
		case t.Events:
			// Shared with the record: the push is encoded within this
			// call, and the members cache copies what it keeps.
			ev, err := schema.DecodeSharedEvent(r.Key, r.Value)
			if err != nil {
				f.skip(r, schema.SkipReason(err), err)
				continue
			}
			f.m.events.Inc()
			users, err := f.recipients(ctx, ev, waitUntil)
			if errors.Is(err, errOutOfSequence) {
				f.skip(r, schema.SkipOutOfSequence, err)
				continue
			}
			if err != nil {
				return err
			}
			offline := add(&parleyv1.Push{Event: ev}, users)
			if ev.Type != parleyv1.EventType_EVENT_TYPE_MESSAGE {
				continue
			}
			for _, u := range offline {
				if u == ev.From {
					continue
				}
				notes = append(notes, &kgo.Record{Topic: t.Notifications, Key: []byte(u), Value: notification(u, r.Value)})
			}
		case t.Ephemeral:
			ty, err := decodeTyping(r.Key, r.Value)
			if err != nil {
				f.skip(r, schema.SkipReason(err), err)
				continue
			}
			if f.cfg.Now().Sub(time.UnixMilli(ty.Ts)) > f.cfg.TypingTTL {
				continue // stale: the moment has passed
			}
			ms, err := f.members.current(ctx, ty.Conv)
			if err != nil {
				f.log.Warn("typing: members unknown", "conv", ty.Conv, "err", err)
				continue
			}
			if _, member := ms[ty.From]; !member {
				continue
			}
			others := make([]string, 0, len(ms))
			for u := range ms {
				if u != ty.From {
					others = append(others, u)
				}
			}
			add(&parleyv1.Push{Typing: ty}, others)
		}
	}
	for _, n := range notes {
		cl.Produce(ctx, n, func(_ *kgo.Record, err error) {
			if err != nil {
				f.notifyFailed.Add(1)
				return
			}
			f.notified.Add(1)
			f.m.notified.Inc()
		})
	}
	f.push(ctx, view, batches)
	if len(notes) > 0 {
		// Bounded by the delivery timeout: notifications the log will not
		// take are counted and dropped rather than holding up pushes.
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		if failed := f.notifyFailed.Swap(0); failed > 0 {
			f.log.Warn("notifications not written", "records", failed)
			f.notifyLost.Add(failed)
			f.m.notifyLost.Add(float64(failed))
		}
	}
	return nil
}

// skip logs and counts a record skipped for reason.
func (f *Fanout) skip(r *kgo.Record, reason string, err error) {
	f.skipped.Add(r.Topic, reason)
	f.log.Warn("skipping a record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason, "err", err)
}

// decodeTyping decodes and checks a record of the ephemeral topic: a
// Typing signal keyed by its valid conversation, from a valid user. The
// error wraps schema.ErrUndecodable or schema.ErrMalformed.
func decodeTyping(key, value []byte) (*parleyv1.Typing, error) {
	ty := new(parleyv1.Typing)
	if err := proto.Unmarshal(value, ty); err != nil {
		return nil, fmt.Errorf("%w: not a parley.v1.Typing: %v", schema.ErrUndecodable, err)
	}
	if !schema.ValidConvID(ty.Conv) || string(key) != ty.Conv || !schema.ValidUserID(ty.From) {
		return nil, fmt.Errorf("%w: typing of %q in %q under key %q", schema.ErrMalformed, schema.Clip(ty.From), schema.Clip(ty.Conv), schema.Clip(string(key)))
	}
	return ty, nil
}

// recipients resolves ev's recipients, retrying store errors with backoff
// until ctx ends: an event is never skipped for want of its members. An
// event out of sequence gets errOutOfSequence at once.
func (f *Fanout) recipients(ctx context.Context, ev *parleyv1.Event, waitUntil time.Time) ([]string, error) {
	backoff := 100 * time.Millisecond
	for {
		users, err := f.members.recipients(ctx, ev, waitUntil)
		if err == nil || ctx.Err() != nil || errors.Is(err, errOutOfSequence) {
			return users, err
		}
		f.log.Warn("members unavailable; retrying", "conv", ev.Conv, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// push posts every node's batch at once and waits for all.
func (f *Fanout) push(ctx context.Context, view *presenceView, batches map[string]*nodeBatch) {
	var wg sync.WaitGroup
	for nodeID, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := (&parleyv1.PushBatch{From: f.cfg.InstanceID, Pushes: b.pushes}).MarshalVT()
			if err != nil {
				f.log.Error("encode push", "err", err)
				return
			}
			pushed, failed := f.m.pushes.WithLabelValues(nodeID), f.m.failures.WithLabelValues(nodeID)
			// One retry, for a connection that broke under the request;
			// a node that timed out is not asked again.
			for try := 0; ; try++ {
				err = f.post(b.addr, body)
				if err == nil {
					f.pushes.Add(int64(len(b.pushes)))
					pushed.Add(float64(len(b.pushes)))
					return
				}
				if try == 1 || ctx.Err() != nil || isTimeout(err) {
					break
				}
			}
			f.failed.Add(int64(len(b.pushes)))
			failed.Add(float64(len(b.pushes)))
			view.suspend(nodeID)
			f.log.Warn("push failed; dropped, and the node skipped until its next heartbeat", "node", nodeID, "addr", b.addr, "pushes", len(b.pushes), "err", err)
		}()
	}
	wg.Wait()
}

func (f *Fanout) post(addr string, body []byte) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + pushPath)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/x-protobuf")
	req.Header.SetBytesV(pushSecretHeader, f.cfg.PushSecret)
	req.SetBodyRaw(body)
	// Do, not DoTimeout: the client's read and write timeouts end the
	// request itself, where DoTimeout would leave it running and a later
	// batch could overtake it.
	if err := f.http.Do(req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("push answered %d: %s", resp.StatusCode(), resp.Body())
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout())
}

// The field numbers of a Notification record (presence.proto).
var (
	notificationUser  = notificationField("user")
	notificationEvent = notificationField("event")
)

func notificationField(name protoreflect.Name) protowire.Number {
	return (&parleyv1.Notification{}).ProtoReflect().Descriptor().Fields().ByName(name).Number()
}

// notification is the Notification record value for user: the user field,
// then the event as the events topic holds it, so that an event is not
// encoded again for every offline member.
func notification(user string, event []byte) []byte {
	b := make([]byte, 0, len(user)+len(event)+24)
	if user != "" { // proto3 leaves an empty string out
		b = protowire.AppendString(protowire.AppendTag(b, notificationUser, protowire.BytesType), user)
	}
	return protowire.AppendBytes(protowire.AppendTag(b, notificationEvent, protowire.BytesType), event)
}
