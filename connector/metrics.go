package connector

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/schema"
)

// gatewayMetrics are a gateway's Prometheus metrics (parley_connector_*).
type gatewayMetrics struct {
	opened       prometheus.Counter
	closed       *prometheus.CounterVec // by close code
	authFailures *prometheus.CounterVec // by reason
	framesIn     prometheus.Counter
	framesOut    prometheus.Counter
	sendAck      prometheus.Observer
	commands     *prometheus.CounterVec // by op and status
	sentOK       prometheus.Counter     // commands{op="send",status="ok"}: every message, looked up once
	pushedEvents prometheus.Counter
	pushedTyping prometheus.Counter
}

// Reasons of parley_connector_auth_failures_total: why a connection never
// became a session.
const (
	authBadToken = "bad_token"            // 4001: bad or expired token, or bad device id
	authNoAuth   = "no_auth"              // 4002: no auth frame in time, or another frame first
	authTooMany  = "too_many_connections" // 4004
	authProtocol = "protocol"             // the auth frame broke the WebSocket protocol or the size limit
)

// sentCloseCodes are the close codes a gateway counts; their series start
// at zero.
var sentCloseCodes = []int{CloseNormal, CloseProtocolError, CloseTooLarge, CloseBadToken, CloseNoAuth, CloseSlowConsumer, CloseTooMany, ClosePolicy, CloseDraining, closeAbnormal}

// commandOps are the requests that become commands.
var commandOps = []string{"send", "edit", "revoke", "create", "members", "read"}

// newGatewayMetrics registers the gateway's metrics with reg (nil: a
// private registry); held reads the connections it holds. The connections
// gauge reads one gateway: give each gateway of a process its own
// registry.
func newGatewayMetrics(reg prometheus.Registerer, held func() float64) (gatewayMetrics, error) {
	var err error
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		if err == nil {
			c, err = metrics.Register(reg, c)
		}
		return c
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		if err == nil {
			c, err = metrics.Register(reg, c)
		}
		return c
	}
	m := gatewayMetrics{
		opened: counter("parley_connector_connections_opened_total", "WebSocket connections upgraded."),
		closed: vec("parley_connector_connections_closed_total",
			"WebSocket connections closed by the server, by close code (1006: the connection failed, no close frame was sent).", "code"),
		authFailures: vec("parley_connector_auth_failures_total",
			"Connections refused before they became a session, by reason (bad_token, no_auth, too_many_connections, protocol).", "reason"),
		commands: vec("parley_connector_commands_total",
			"Client requests that became commands, by op and by answer: ok, or the error code.", "op", "status"),
		pushedEvents: counter("parley_connector_pushed_events_total", "Events received from fanout for this node's devices (once per event, whatever its recipients)."),
		pushedTyping: counter("parley_connector_pushed_typing_total", "Typing signals received from fanout for this node's devices."),
	}
	frames := vec("parley_connector_frames_total", "Client protocol messages read (in) and written (out) on WebSocket connections.", "direction")
	m.framesIn, m.framesOut = frames.WithLabelValues("in"), frames.WithLabelValues("out")
	sendAck := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_connector_send_ack_seconds",
		Help:    "Time from reading a send request to queueing its answer (ack or error): the command's round trip through the log and the sequencer.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms to 8 s
	})
	if err == nil {
		sendAck, err = metrics.Register(reg, sendAck)
	}
	m.sendAck = sendAck
	if err == nil {
		_, err = metrics.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_connector_connections",
			Help: "WebSocket connections held: sessions, connections still authenticating, and refused ones being closed.",
		}, held))
	}
	if err != nil {
		return gatewayMetrics{}, err
	}
	for _, code := range sentCloseCodes {
		m.closed.WithLabelValues(strconv.Itoa(code))
	}
	for _, r := range []string{authBadToken, authNoAuth, authTooMany, authProtocol} {
		m.authFailures.WithLabelValues(r)
	}
	for _, op := range commandOps {
		m.commands.WithLabelValues(op, "ok")
		m.commands.WithLabelValues(op, schema.CodeUnavailable)
	}
	m.sentOK = m.commands.WithLabelValues("send", "ok")
	return m, nil
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) int64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}
