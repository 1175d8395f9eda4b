package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaNamespace prefixes the Kafka client metrics (franz-go's kprom):
// parley_kafka_produce_records_total, parley_kafka_fetch_bytes_total, …
const KafkaNamespace = "parley_kafka"

// KafkaClient returns the option that exports a long-lived Kafka client's
// metrics to reg under KafkaNamespace, labelled with role and client (what
// the client is for); nil reg: no option. A client created again under
// the same labels (a new transaction session) replaces the metrics of the
// one before it, which must be closed first: its close unregisters the
// collectors of those labels, the new client's then. Short-lived clients (a restore, an admin call) are left
// out: their series would come and go.
func KafkaClient(reg prometheus.Registerer, role, client string) []kgo.Opt {
	if reg == nil {
		return nil
	}
	m := kprom.NewMetrics(KafkaNamespace,
		kprom.Registerer(replacing{reg}),
		kprom.WithStaticLabel(prometheus.Labels{"role": role, "client": client}),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.Batches, kprom.UncompressedBytes),
		// The time from writing a request to a broker to reading its
		// response: the log's latency as each role sees it.
		kprom.Histograms(kprom.RequestDurationE2E),
	)
	return []kgo.Opt{kgo.WithHooks(m)}
}

// lagTimeout bounds the broker requests of one measurement of the lag;
// lagMaxAge is how long a measurement answers scrapes, so that scrapes
// however frequent cost the broker a few requests every lagMaxAge at most.
const (
	lagTimeout = 3 * time.Second
	lagMaxAge  = 5 * time.Second
)

// Lag is parley_consumer_lag{role, group, topic, partition}: how many
// records of each partition a consumer group has not committed yet,
// measured from the group's committed offsets and the partitions' end
// offsets when the metrics are scraped (or up to lagMaxAge before). On a
// topic written in transactions a group at rest may read 1: the end is the
// transaction's commit marker, one past the last record.
type Lag struct {
	desc  *prometheus.Desc
	group string

	// mu is held through a measurement: concurrent scrapes share it.
	mu       sync.Mutex
	adm      *kadm.Client
	measured time.Time           // of lags; zero: none
	lags     []prometheus.Metric // the last measurement
}

// NewLag registers the lag of group, consumed by role, with reg (nil: a
// private registry). It reports nothing until Watch gives it a client.
func NewLag(reg prometheus.Registerer, role, group string) (*Lag, error) {
	l := &Lag{
		desc: prometheus.NewDesc("parley_consumer_lag",
			"Records of a partition that the consumer group has not committed yet (end offset minus committed offset), measured at most 5 s before the scrape.",
			[]string{"topic", "partition"}, prometheus.Labels{"role": role, "group": group}),
		group: group,
	}
	return Register(reg, l)
}

// Watch measures the lag through cl (nil: stop measuring). The role calls
// it with its consumer once it has one.
func (l *Lag) Watch(cl *kgo.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.measured, l.lags = time.Time{}, nil
	if cl == nil {
		l.adm = nil
		return
	}
	l.adm = kadm.NewClient(cl)
}

// Describe implements prometheus.Collector.
func (l *Lag) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector: one gauge per partition whose
// lag is known.
func (l *Lag) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.adm == nil {
		return
	}
	if time.Since(l.measured) > lagMaxAge {
		l.lags = l.measure()
		l.measured = time.Now()
	}
	for _, m := range l.lags {
		ch <- m
	}
}

// measure asks the broker for the group's lag; mu is held.
func (l *Lag) measure() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
	defer cancel()
	lags, err := l.adm.Lag(ctx, l.group)
	if err != nil {
		return nil
	}
	var out []prometheus.Metric
	for _, g := range lags {
		for topic, parts := range g.Lag {
			for p, ml := range parts {
				if ml.Err != nil || ml.Lag < 0 {
					continue
				}
				out = append(out, prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(ml.Lag), topic, strconv.Itoa(int(p))))
			}
		}
	}
	return out
}
