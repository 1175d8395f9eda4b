package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// storeOps are the op label values of the store metrics, one per method.
var storeOps = []string{"append", "events", "conversation", "membership", "members", "user_conversations", "count_messages"}

// InstrumentStore returns st measured for role: the latency of every call
// in parley_store_seconds{role, op} and the calls that failed (not found
// is an answer, not a failure) in parley_store_errors_total{role, op}. The
// result has a Ping method if st has one.
func InstrumentStore(reg prometheus.Registerer, role string, st store.Store) (store.Store, error) {
	seconds, err := Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "parley_store_seconds",
		Help:    "Latency of timeline store calls, by role and operation.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50 µs to 1.6 s
	}, []string{"role", "op"}))
	if err != nil {
		return nil, err
	}
	errs, err := Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_store_errors_total",
		Help: "Timeline store calls that failed, by role and operation.",
	}, []string{"role", "op"}))
	if err != nil {
		return nil, err
	}
	m := &measuredStore{st: st}
	for i, op := range storeOps {
		m.ops[i] = storeOp{seconds: seconds.WithLabelValues(role, op), errors: errs.WithLabelValues(role, op)}
	}
	if p, ok := st.(interface{ Ping(context.Context) error }); ok {
		return measuredPinger{m, p}, nil
	}
	return m, nil
}

type storeOp struct {
	seconds prometheus.Observer
	errors  prometheus.Counter
}

func (o storeOp) done(start time.Time, err error) {
	o.seconds.Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		o.errors.Inc()
	}
}

// measuredStore indexes ops as storeOps does.
type measuredStore struct {
	st  store.Store
	ops [7]storeOp
}

func (m *measuredStore) Append(ctx context.Context, events []*parleyv1.Event) error {
	start := time.Now()
	err := m.st.Append(ctx, events)
	m.ops[0].done(start, err)
	return err
}

func (m *measuredStore) Events(ctx context.Context, conv string, r store.Range) ([]*parleyv1.Event, bool, error) {
	start := time.Now()
	evs, more, err := m.st.Events(ctx, conv, r)
	m.ops[1].done(start, err)
	return evs, more, err
}

func (m *measuredStore) Conversation(ctx context.Context, conv string) (store.Conversation, error) {
	start := time.Now()
	c, err := m.st.Conversation(ctx, conv)
	m.ops[2].done(start, err)
	return c, err
}

func (m *measuredStore) Membership(ctx context.Context, conv, user string) (store.Membership, error) {
	start := time.Now()
	ms, err := m.st.Membership(ctx, conv, user)
	m.ops[3].done(start, err)
	return ms, err
}

func (m *measuredStore) Members(ctx context.Context, conv string) ([]store.Membership, error) {
	start := time.Now()
	ms, err := m.st.Members(ctx, conv)
	m.ops[4].done(start, err)
	return ms, err
}

func (m *measuredStore) UserConversations(ctx context.Context, user string) ([]store.UserConversation, error) {
	start := time.Now()
	cs, err := m.st.UserConversations(ctx, user)
	m.ops[5].done(start, err)
	return cs, err
}

func (m *measuredStore) CountMessages(ctx context.Context, conv string, after, upTo int64, except string, max int) (int, error) {
	start := time.Now()
	n, err := m.st.CountMessages(ctx, conv, after, upTo, except, max)
	m.ops[6].done(start, err)
	return n, err
}

func (m *measuredStore) Close() error { return m.st.Close() }

// measuredPinger is a measured store whose store can be pinged.
type measuredPinger struct {
	*measuredStore
	p interface{ Ping(context.Context) error }
}

func (m measuredPinger) Ping(ctx context.Context) error { return m.p.Ping(ctx) }
