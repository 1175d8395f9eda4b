// Package allinone runs Parley on one machine in one process: the embedded
// Kafka-protocol broker, the timeline store (embedded Pebble by default, or
// one given, such as Cassandra) and the roles,
// each role talking to the broker over loopback with the same code a
// cluster runs. Starting again on the same data directory keeps every
// conversation and continues every seq.
//
// Roles present: sequencer and writer always; with Config.Listen, the
// connector (command path, WebSocket gateway, HTTP API, push endpoint on a
// loopback port) and fanout, which pushes to it.
package allinone

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/kafka/embedded"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/writer"
)

// Config configures the all-in-one node.
type Config struct {
	// DataDir holds the broker's log (broker/), the store (store/), the
	// sequencer's local state (sequencer/, a cache of the log, kept across
	// a clean stop and emptied after a crash) and the secrets; default
	// "./parley-data".
	DataDir string
	// BrokerListen is the embedded broker's address; default
	// "127.0.0.1:9092".
	BrokerListen string
	// Partitions per topic; default 8.
	Partitions int32
	// Store is the timeline store; nil means a Pebble store in
	// DataDir/store. The node closes it when Run returns, or when Start
	// fails.
	Store store.Store
	// Listen is the public listener of the connector (WebSocket); empty
	// means no connector.
	Listen string
	// TokenSecret verifies client tokens; required with Listen.
	TokenSecret []byte
	// APIKey is the HTTP API's bearer key (at least 16 bytes); empty: the
	// API answers 503.
	APIKey []byte
	// Gateway holds the gateway's limits and timeouts (zero fields take
	// their defaults); the node sets its listeners, secrets and logger.
	Gateway connector.GatewayConfig
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the roles' metrics; nil: a private registry nobody
	// scrapes.
	Registerer prometheus.Registerer
}

// Node is a started all-in-one node.
type Node struct {
	cfg     Config
	broker  *embedded.Broker
	store   store.Store
	seq     *sequencer.Sequencer
	writer  *writer.Writer
	cmd     *connector.Commander
	gateway *connector.Gateway
	fanout  *fanout.Fanout
	kafka   kafka.Config

	closeOnce sync.Once
}

// Start starts the broker and opens the store; Run runs the roles.
func Start(cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "parley-data"
	}
	if cfg.BrokerListen == "" {
		cfg.BrokerListen = "127.0.0.1:9092"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b, err := embedded.Start(embedded.Config{
		Listen: cfg.BrokerListen, DataDir: filepath.Join(cfg.DataDir, "broker"), Logger: cfg.Logger,
	})
	if err != nil {
		if cfg.Store != nil {
			cfg.Store.Close()
		}
		return nil, err
	}
	st := cfg.Store
	if st == nil {
		if st, err = pebblestore.Open(filepath.Join(cfg.DataDir, "store"), pebblestore.Options{}); err != nil {
			b.Close()
			return nil, err
		}
	}
	n := &Node{cfg: cfg, broker: b, store: st}
	n.kafka = kafka.Config{
		Brokers: []string{b.Addr()}, Partitions: cfg.Partitions, Logger: cfg.Logger, ClientID: "parley-dev",
	}
	n.seq, err = sequencer.New(sequencer.Config{Kafka: n.kafka, NodeID: "dev", Logger: cfg.Logger, Registerer: cfg.Registerer,
		StateDir: filepath.Join(cfg.DataDir, "sequencer")})
	if err == nil {
		n.writer, err = writer.New(writer.Config{Kafka: n.kafka, Logger: cfg.Logger, Registerer: cfg.Registerer}, st)
	}
	if err == nil && cfg.Listen != "" {
		// The push endpoint and its secret live only as long as the process:
		// both ends of it are here.
		pushSecret := []byte(rand.Text())
		n.cmd, err = connector.NewCommander(context.Background(), connector.CommanderConfig{Kafka: n.kafka, NodeID: "dev", Logger: cfg.Logger, Registerer: cfg.Registerer})
		if err == nil {
			g := cfg.Gateway
			g.Listen, g.TokenSecret, g.AllowAnyOrigin, g.Logger = cfg.Listen, cfg.TokenSecret, loopbackOnly(cfg.Listen), cfg.Logger
			g.APIKey = cfg.APIKey
			// The web client's sign-in by name (a token for anyone who has
			// the code): `parley dev` only, and only while no other machine
			// can reach it.
			if loopbackOnly(cfg.Listen) {
				g.DevLoginCode = rand.Text()
			}
			if g.Registerer == nil {
				g.Registerer = cfg.Registerer
			}
			g.PushListen, g.PushSecret = "127.0.0.1:0", pushSecret
			n.gateway, err = connector.NewGateway(g, n.cmd, st)
		}
		if err == nil {
			n.fanout, err = fanout.New(fanout.Config{Kafka: n.kafka, PushSecret: pushSecret, InstanceID: "dev", Logger: cfg.Logger, Registerer: cfg.Registerer}, st)
		}
		if err == nil {
			err = n.gateway.Listen()
		}
	}
	if err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// loopbackOnly reports whether addr listens on a loopback address only:
// then any Origin may connect (the all-in-one default).
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// GatewayAddr is the connector's public address once Run listens (nil
// without a connector).
func (n *Node) GatewayAddr() net.Addr {
	if n.gateway == nil {
		return nil
	}
	return n.gateway.Addr()
}

// DevLoginCode is the code the web client's sign-in by name asks for (in
// its address: http://host:port/#code=CODE), or "" if the node has none.
func (n *Node) DevLoginCode() string {
	if n.gateway == nil {
		return ""
	}
	return n.gateway.DevLoginCode()
}

// BrokerAddr is the embedded broker's host:port.
func (n *Node) BrokerAddr() string { return n.broker.Addr() }

// Kafka is the Kafka configuration the roles use.
func (n *Node) Kafka() kafka.Config { return n.kafka }

// Store is the node's timeline store (valid until Run returns).
func (n *Node) Store() store.Store { return n.store }

// Run runs every role until ctx ends, then stops them, closes the store and
// stops the broker. If a role fails, the others are stopped too and its
// error is returned.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	roles := map[string]func(context.Context) error{
		"sequencer": n.seq.Run,
		"writer":    n.writer.Run,
	}
	if n.gateway != nil {
		roles["connector"] = func(ctx context.Context) error { return connector.Serve(ctx, n.cmd, n.gateway) }
		roles["fanout"] = n.fanout.Run
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(roles))
	for name, run := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (n *Node) close() {
	n.closeOnce.Do(func() {
		if n.cmd != nil {
			n.cmd.Close()
		}
		if n.seq != nil { // its state store, if Run never ran
			if err := n.seq.Close(); err != nil {
				n.cfg.Logger.Error("closing the sequencer's state store", "err", err)
			}
		}
		if err := n.store.Close(); err != nil {
			n.cfg.Logger.Error("closing store", "err", err)
		}
		n.broker.Close()
	})
}
