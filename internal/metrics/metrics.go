// Package metrics holds the Prometheus metrics more than one role keeps.
// Nothing here is global: a role registers its metrics with the
// prometheus.Registerer of its Config, and a nil one stands for a private
// registry that nobody scrapes.
package metrics

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/parley-im/parley/schema"
)

// Skipped is parley_records_skipped_total{role, topic, reason}: the
// records a role consumed without acting on them, because they could not
// be decoded or broke a rule of their topic (schema.SkipReasons). Methods
// are safe for concurrent use.
type Skipped struct {
	vec *prometheus.CounterVec
}

// NewSkipped registers the counter of role with reg (nil: a private
// registry) and starts the series of each topic and reason at zero, so that
// a scrape shows them before the first skip. Roles of one process may share
// reg; two instances of one role in one process share the counter.
func NewSkipped(reg prometheus.Registerer, role string, topics ...string) (*Skipped, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	vec, err := Register(prometheus.WrapRegistererWith(prometheus.Labels{"role": role}, reg), prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_records_skipped_total",
		Help: "Records consumed and skipped, without acting on them, by topic and reason (undecodable, malformed, out_of_sequence, replayed).",
	}, []string{"topic", "reason"}))
	if err != nil {
		return nil, err
	}
	for _, t := range topics {
		for _, r := range schema.SkipReasons {
			vec.WithLabelValues(t, r)
		}
	}
	return &Skipped{vec: vec}, nil
}

// Add counts one record of topic skipped for reason.
func (s *Skipped) Add(topic, reason string) { s.vec.WithLabelValues(topic, reason).Inc() }

// Replays returns what a consumer gives kafka.SkipReplays (or
// kafka.Replays.Skip) to hear of the records it takes out: each run is
// logged as a warning and counted as replayed.
func (s *Skipped) Replays(log *slog.Logger) func(topic string, partition int32, from, next int64, n int) {
	return func(topic string, partition int32, from, next int64, n int) {
		log.Warn("skipping records handled already: the Kafka client went back in the log",
			"topic", topic, "partition", partition, "from", from, "next", next, "skipped", n, "reason", schema.SkipReplayed)
		s.vec.WithLabelValues(topic, schema.SkipReplayed).Add(float64(n))
	}
}

// Count returns how many records of topic were skipped for reason.
func (s *Skipped) Count(topic, reason string) int64 {
	var m dto.Metric
	if err := s.vec.WithLabelValues(topic, reason).Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}
