// Package embedded runs the Kafka-protocol broker of the all-in-one mode:
// franz-go's kfake, persisting to a data directory, listening on loopback.
// Every role talks to it over TCP exactly as it would to a cluster.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the address to listen on; default "127.0.0.1:9092". Port 0
	// picks a free port (see Broker.Addr).
	Listen string
	// DataDir holds the broker's segments and state; required. Starting on
	// an existing DataDir restores every topic, offset and transaction.
	DataDir string
	// SyncWrites fsyncs every write. Without it data reaches the OS on every
	// write (it survives a killed process) and the disk at segment roll and
	// shutdown.
	SyncWrites bool
	// CompactionInterval is how often compacted topics are cleaned; default
	// 10 minutes.
	CompactionInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	c    *kfake.Cluster
	addr string
}

// Start starts the broker. It returns once the broker accepts connections.
func Start(cfg Config) (*Broker, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9092"
	}
	if cfg.DataDir == "" {
		return nil, errors.New("embedded broker: no data dir")
	}
	if cfg.CompactionInterval <= 0 {
		cfg.CompactionInterval = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker: bad port in %q", cfg.Listen)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(cfg.DataDir),
		// kfake always asks for 127.0.0.1; bind the host that was configured.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": strconv.FormatInt(cfg.CompactionInterval.Milliseconds(), 10),
		}),
		kfake.WithLogger(logger{cfg.Logger.With("component", "broker")}),
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Broker{c: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr is the host:port clients dial.
func (b *Broker) Addr() string { return b.addr }

// Cluster exposes the underlying kfake cluster (for fault injection in tests).
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker, flushing its data to disk.
func (b *Broker) Close() { b.c.Close() }

type logger struct{ l *slog.Logger }

func (l logger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.l.Error(fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		l.l.Warn(fmt.Sprintf(msg, args...))
	}
}
