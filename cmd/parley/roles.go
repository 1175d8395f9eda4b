package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-im/parley/admin"
	"github.com/parley-im/parley/allinone"
	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/connector"
	"github.com/parley-im/parley/fanout"
	"github.com/parley-im/parley/kafka"
	"github.com/parley-im/parley/sequencer"
	"github.com/parley-im/parley/store/cassandrastore"
	"github.com/parley-im/parley/store/pebblestore"
	"github.com/parley-im/parley/tap"
	"github.com/parley-im/parley/writer"
)

// kafkaFlags adds the flags that say how to reach the cluster.
func kafkaFlags(fs *flag.FlagSet) func() (kafka.Config, error) {
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated Kafka seed brokers")
	prefix := fs.String("topic-prefix", "parley.", "prefix of every topic name")
	partitions := fs.Int("partitions", 16, "partitions of topics this process creates (existing topics are kept as they are)")
	return func() (kafka.Config, error) {
		var bs []string
		for _, b := range strings.Split(*brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				bs = append(bs, b)
			}
		}
		if *partitions < 1 || *partitions > 10000 {
			return kafka.Config{}, fmt.Errorf("--partitions must be in 1..10000")
		}
		c := kafka.Config{Brokers: bs, TopicPrefix: *prefix, Partitions: int32(*partitions)}
		return c, c.WithDefaults().Validate()
	}
}

// roleFlags holds the flags of every command that talks to the cluster:
// the Kafka ones and the log ones.
type roleFlags struct {
	fs     *flag.FlagSet
	kafka  func() (kafka.Config, error)
	logger func() (*slog.Logger, error)
}

func newRoleFlags(cmd string) *roleFlags {
	fs := newFlags(cmd)
	return &roleFlags{fs: fs, kafka: kafkaFlags(fs), logger: logFlags(fs)}
}

// parse parses args (and the environment) and returns the logger and the
// Kafka configuration, which logs to it.
func (r *roleFlags) parse(args []string) (*slog.Logger, kafka.Config, error) {
	if err := parse(r.fs, args); err != nil {
		return nil, kafka.Config{}, err
	}
	log, err := r.logger()
	if err != nil {
		return nil, kafka.Config{}, err
	}
	k, err := r.kafka()
	k.Logger = log
	return log, k, err
}

// limitFlags adds the flags of the gateway's per-connection limits and
// returns a function that sets them on a configuration.
func limitFlags(fs *flag.FlagSet) func(*connector.GatewayConfig) {
	rate := fs.Float64("conn-rate", 20, "frames per second a client connection may send (over it: rate_limited)")
	burst := fs.Int("conn-burst", 40, "burst of frames a client connection may send at once")
	perUser := fs.Int("max-conns-per-user", 16, "connections one user may hold on this node")
	return func(c *connector.GatewayConfig) {
		c.RatePerSecond, c.RateBurst, c.MaxConnsPerUser = *rate, *burst, *perUser
	}
}

// lingerFlag adds the sequencer's --linger flag; the function it returns
// gives the sequencer.Config value once the flags are parsed (0 on the
// command line is the Config's "none", a negative duration).
func lingerFlag(fs *flag.FlagSet) func() (time.Duration, error) {
	d := fs.Duration("linger", sequencer.DefaultLinger,
		"least time from the start of one transaction to the next, unless a full batch waits: commands arriving meanwhile share a transaction (0: none)")
	return func() (time.Duration, error) {
		switch {
		case *d < 0:
			return 0, fmt.Errorf("--linger %v: must not be negative", *d)
		case *d == 0:
			return -1, nil
		}
		return *d, nil
	}
}

// stateSyncFlag adds the sequencer's --state-sync-records flag; the
// function it returns gives the value once the flags are parsed.
func stateSyncFlag(fs *flag.FlagSet) func() (int, error) {
	n := fs.Int("state-sync-records", sequencer.DefaultStateSyncRecords,
		"changelog records of a partition after which the conversations they changed are written to --state-dir (they are after a minute anyway): a restore after an aborted transaction reads at most about this many")
	return func() (int, error) {
		if *n < 1 {
			return 0, fmt.Errorf("--state-sync-records %d: must be at least 1", *n)
		}
		return *n, nil
	}
}

// commitIntervalFlag adds the flag of how often the writer and fanout
// commit the offsets of what they have finished with; the function it
// returns gives the value once the flags are parsed.
func commitIntervalFlag(fs *flag.FlagSet) func() (time.Duration, error) {
	d := fs.Duration("commit-interval", kafka.CommitInterval,
		fmt.Sprintf("how often finished offsets are committed (at least %v); a crash redoes up to this much", kafka.MinCommitInterval))
	return func() (time.Duration, error) {
		if *d < kafka.MinCommitInterval {
			return 0, fmt.Errorf("--commit-interval %v: must be at least %v", *d, kafka.MinCommitInterval)
		}
		return *d, nil
	}
}

func runDev(ctx context.Context, args []string) error {
	fs := newFlags("dev")
	listen := fs.String("listen", "127.0.0.1:8080", "public listener (WebSocket and HTTP API)")
	brokerListen := fs.String("broker-listen", "127.0.0.1:9092", "embedded broker address")
	dataDir := fs.String("data-dir", "parley-data", "data directory")
	apiKey := fs.String("api-key", "", "API key for the HTTP API (default: a random key kept in the data dir)")
	tokenSecret := fs.String("token-secret", "", "secret that signs client tokens (default: a random secret kept in the data dir)")
	partitions := fs.Int("partitions", 8, "partitions per topic, for a new data dir")
	limits := limitFlags(fs)
	so := storeFlags(fs, "", true)
	adminAddr := adminFlag(fs)
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	if *partitions < 1 || *partitions > 1000 {
		return errors.New("--partitions must be in 1..1000")
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	if *apiKey == "" {
		if *apiKey, err = auth.LoadOrCreateSecret(*dataDir, "api-key"); err != nil {
			return err
		}
	}
	if *tokenSecret == "" {
		if *tokenSecret, err = auth.LoadOrCreateSecret(*dataDir, "token-secret"); err != nil {
			return err
		}
	}
	token, err := auth.Sign([]byte(*tokenSecret), "dev", 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	if *so.dir == "" {
		*so.dir = filepath.Join(*dataDir, "store")
	}
	st, err := so.open(ctx, log, pebblestore.Options{})
	if err != nil {
		return err
	}
	var gcfg connector.GatewayConfig
	limits(&gcfg)
	reg := newRegistry()
	gcfg.Metrics = reg
	node, err := allinone.Start(allinone.Config{
		Gateway: gcfg, Registerer: reg,
		DataDir: *dataDir, BrokerListen: *brokerListen, Partitions: int32(*partitions), Logger: log, Store: st,
		Listen: *listen, TokenSecret: []byte(*tokenSecret), APIKey: []byte(*apiKey),
	})
	if err != nil {
		return err // Start closed the store
	}
	abs, _ := filepath.Abs(*dataDir)
	fmt.Printf(`Parley is running (all in one process).
  broker     %s
  store      %s
  data dir   %s
  web client http://%s/%s
  public     ws://%s/v1/ws (WebSocket client protocol)
  HTTP API   http://%s/v1/ (Authorization: Bearer <API key>)
  API key    %s
  dev token  %s  (user "dev", 24 h; more with: parley token --data-dir %s --user NAME)
Stop with Ctrl-C.
`, node.BrokerAddr(), so.describe(), abs, node.GatewayAddr(), devLoginFragment(node.DevLoginCode()), node.GatewayAddr(), node.GatewayAddr(), *apiKey, token, *dataDir)
	err = runWithAdmin(ctx, *adminAddr, node.Kafka(), st, log, reg, node.Run)
	log.Info("stopped")
	return err
}

// devLoginFragment is the part of the web client's address that carries
// the dev sign-in code ("" without one).
func devLoginFragment(code string) string {
	if code == "" {
		return ""
	}
	return "#code=" + code
}

func runSequencer(ctx context.Context, args []string) error {
	rf := newRoleFlags("sequencer")
	fs := rf.fs
	nodeID := fs.String("node-id", "", "stable unique id of this instance (default: hostname-pid)")
	group := fs.String("group", "parley-sequencer", "consumer group")
	lingerFor := lingerFlag(fs)
	stateDir := fs.String("state-dir", "parley-data/sequencer",
		"directory of this instance's local copy of its partitions' state, filled from the changelog and kept for the next run after a clean stop (one sequencer to a directory)")
	stateCache := fs.Int64("state-cache-mb", sequencer.DefaultStateCacheBytes>>20,
		"MiB of conversation state kept in memory; the rest is read from --state-dir when needed")
	stateSyncFor := stateSyncFlag(fs)
	adminAddr := adminFlag(fs)
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	linger, err := lingerFor()
	if err != nil {
		return err
	}
	if *stateCache < 1 {
		return fmt.Errorf("--state-cache-mb %d: must be at least 1", *stateCache)
	}
	stateSync, err := stateSyncFor()
	if err != nil {
		return err
	}
	reg := newRegistry()
	s, err := sequencer.New(sequencer.Config{Kafka: k, NodeID: *nodeID, Group: *group, Linger: linger, Logger: log, Registerer: reg,
		StateDir: *stateDir, StateCacheBytes: *stateCache << 20, StateSyncRecords: stateSync})
	if err != nil {
		return err
	}
	defer s.Close() // the state store, if Run returned before taking it
	return runWithAdmin(ctx, *adminAddr, k, nil, log, reg, s.Run)
}

func runWriter(ctx context.Context, args []string) error {
	rf := newRoleFlags("writer")
	fs := rf.fs
	group := fs.String("group", "parley-writer", "consumer group")
	commitEvery := commitIntervalFlag(fs)
	so := storeFlags(fs, "parley-data/store", false)
	adminAddr := adminFlag(fs)
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	commitInterval, err := commitEvery()
	if err != nil {
		return err
	}
	st, err := so.open(ctx, log, pebblestore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	reg := newRegistry()
	w, err := writer.New(writer.Config{Kafka: k, Group: *group, CommitInterval: commitInterval, Logger: log, Registerer: reg}, st)
	if err != nil {
		return err
	}
	log.Info("writer starting", "store", so.describe())
	return runWithAdmin(ctx, *adminAddr, k, st, log, reg, w.Run, map[string]admin.Check{"writer": w.Check})
}

func runTap(ctx context.Context, args []string) error {
	rf := newRoleFlags("tap")
	fs := rf.fs
	follow := fs.Bool("follow", true, "keep printing new events; false stops at the end")
	var convs, types, offsets []string
	list := func(dst *[]string) func(string) error {
		return func(s string) error { *dst = append(*dst, s); return nil }
	}
	fs.Func("conv", "only events of this conversation, read from its partition only (repeatable, or comma-separated)", list(&convs))
	fs.Func("type", "only events of this type: "+strings.Join(tap.TypeNames(), ", ")+" (repeatable, or comma-separated)", list(&types))
	fs.Func("from-offset", "start at offset N of every partition (N), or of partition P (P:N); other partitions start at their beginning (repeatable, or comma-separated)", list(&offsets))
	since := fs.String("since", "", "only events written at or after this time, RFC 3339 (2026-11-21T09:30:00Z), or this long ago (90m)")
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	cfg := tap.Config{Kafka: k, Follow: *follow, Logger: log}
	if cfg.Convs, err = tap.ParseConvs(convs...); err != nil {
		return fmt.Errorf("--conv: %w", err)
	}
	if cfg.Types, err = tap.ParseTypes(types...); err != nil {
		return fmt.Errorf("--type: %w", err)
	}
	if cfg.Offsets, err = tap.ParseOffsets(offsets...); err != nil {
		return fmt.Errorf("--from-offset: %w", err)
	}
	if *since != "" {
		if cfg.Offsets != nil {
			return errors.New("--since and --from-offset both say where to start: give one")
		}
		if cfg.Since, err = tap.ParseSince(*since, time.Now()); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	return tap.Run(ctx, cfg, os.Stdout)
}

func runRebuild(ctx context.Context, args []string) error {
	rf := newRoleFlags("rebuild")
	fs := rf.fs
	so := storeFlags(fs, "", false)
	force := fs.Bool("force", false, "rebuild into a store that is not empty (safe, writes are idempotent: use it to finish a rebuild that failed)")
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	if isC, err := so.isCassandra(); err != nil {
		return err
	} else if !isC {
		if *so.dir == "" {
			return errors.New("--store-dir (or --cassandra) is required")
		}
		if entries, err := os.ReadDir(*so.dir); err == nil && len(entries) > 0 && !*force {
			return fmt.Errorf("--store-dir %s is not empty: rebuild fills an empty store (--force to finish a failed rebuild)", *so.dir)
		} else if err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
	}
	st, err := so.open(ctx, log, pebblestore.Options{NoSync: true})
	if err != nil {
		return err
	}
	if e, ok := st.(interface {
		Empty(context.Context) (bool, error)
	}); ok && !*force {
		empty, err := e.Empty(ctx)
		if err == nil && !empty {
			err = fmt.Errorf("%s is not empty: rebuild fills an empty store (--force to finish a failed rebuild)", so.describe())
		}
		if err != nil {
			st.Close()
			return err
		}
	}
	start := time.Now()
	stats, err := writer.RebuildWith(ctx, writer.RebuildConfig{Kafka: k, Batch: 10000, Logger: log, Progress: func(p writer.RebuildProgress) {
		fmt.Fprintln(os.Stderr, rebuildProgressLine(p))
	}}, st)
	if f, ok := st.(interface{ Flush() error }); ok && err == nil {
		err = f.Flush()
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Printf("rebuilt %d events into %s in %v (%.0f events/s); records skipped: %d undecodable, %d malformed, %d out of sequence\n",
		stats.Events, so.describe(), took.Round(time.Millisecond), float64(stats.Events)/took.Seconds(), stats.Undecodable, stats.Malformed, stats.OutOfSequence)
	return nil
}

// rebuildProgressLine is a progress report of parley rebuild, for stderr.
func rebuildProgressLine(p writer.RebuildProgress) string {
	var b strings.Builder
	b.WriteString("rebuild: ")
	if p.Done {
		b.WriteString("done: ")
	}
	fmt.Fprintf(&b, "%d", p.Read)
	if p.Total > 0 {
		fmt.Fprintf(&b, " of %d records (%.1f%%)", p.Total, 100*float64(p.Read)/float64(p.Total))
	} else {
		b.WriteString(" records")
	}
	fmt.Fprintf(&b, ", %d events stored", p.Stats.Events)
	if skipped := p.Stats.Undecodable + p.Stats.Malformed + p.Stats.OutOfSequence; skipped > 0 {
		fmt.Fprintf(&b, ", %d skipped", skipped)
	}
	if s := p.Elapsed.Seconds(); s > 0 && p.Read > 0 {
		fmt.Fprintf(&b, ", %.0f records/s", float64(p.Read)/s)
	}
	fmt.Fprintf(&b, ", %v elapsed", p.Elapsed.Round(100*time.Millisecond))
	return b.String()
}

// migrateStepLine is a step of parley migrate, for stderr.
func migrateStepLine(s cassandrastore.MigrateStep) string {
	switch {
	case s.Migration == "":
		return "migrate: " + s.What
	case s.Statement == 0:
		return fmt.Sprintf("migrate: %s: %s", s.Migration, s.What)
	}
	return fmt.Sprintf("migrate: %s (%d/%d): %s", s.Migration, s.Statement, s.Statements, s.What)
}

func runMigrate(ctx context.Context, args []string) error {
	fs := newFlags("migrate")
	cassandra := fs.String("cassandra", "", "comma-separated Cassandra contact points, host or host:port")
	keyspace := fs.String("keyspace", "parley", "Cassandra keyspace")
	replication := fs.String("replication", cassandrastore.DefaultReplication, "replication map of the keyspace, if it is created")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	if *cassandra == "" {
		return errors.New("--cassandra is required")
	}
	so := &storeOptions{cassandra: cassandra, keyspace: keyspace, consistency: new("LOCAL_QUORUM"), localDC: new("")}
	cfg, err := so.cassandraConfig(log)
	if err != nil {
		return err
	}
	applied, err := cassandrastore.MigrateWith(ctx, cfg, cassandrastore.MigrateOptions{Replication: *replication, Progress: func(s cassandrastore.MigrateStep) {
		fmt.Fprintln(os.Stderr, migrateStepLine(s))
	}})
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Printf("keyspace %s is up to date\n", *keyspace)
	}
	for _, a := range applied {
		fmt.Printf("applied %s to keyspace %s\n", a, *keyspace)
	}
	return nil
}

func runToken(args []string) error {
	fs := newFlags("token")
	user := fs.String("user", "", "user id the token is for")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	dataDir := fs.String("data-dir", "parley-data", "data dir whose token secret signs the token")
	secret := fs.String("token-secret", "", "signing secret (default: the one kept in --data-dir)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("--user is required")
	}
	if *secret == "" {
		b, err := os.ReadFile(filepath.Join(*dataDir, "token-secret"))
		if errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("%s has no token secret: start parley dev with it once, or pass --token-secret", *dataDir)
		}
		if err != nil {
			return err
		}
		*secret = strings.TrimSpace(string(b))
	}
	tok, err := auth.Sign([]byte(*secret), *user, *ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func runConnector(ctx context.Context, args []string) error {
	rf := newRoleFlags("connector")
	fs := rf.fs
	listen := fs.String("listen", "127.0.0.1:8080", "public listener (WebSocket and HTTP API)")
	nodeID := fs.String("node-id", "", "unique id of this connector (default: hostname-pid)")
	tokenSecret := fs.String("token-secret", "", "secret that verifies client tokens (required)")
	apiKey := fs.String("api-key", "", "bearer key of the HTTP API, at least 16 bytes (empty: the API answers 503)")
	origins := fs.String("allowed-origins", "", "comma-separated Origins browsers may connect from (besides the listener's own host)")
	pushListen := fs.String("push-listen", "", "address of the internal push endpoint fanout posts to (not public; empty: off)")
	pushSecret := fs.String("push-secret", "", "shared secret of the push endpoint (at least 16 bytes)")
	pushAdvertise := fs.String("push-advertise", "", "push address fanout dials, published in presence (default: the push listener's address)")
	heartbeat := fs.Duration("heartbeat", 5*time.Second, "presence heartbeat interval; fanout counts this node dead after 3 missed")
	limits := limitFlags(fs)
	so := storeFlags(fs, "parley-data/store", false)
	adminAddr := adminFlag(fs)
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	if *tokenSecret == "" {
		return errors.New("--token-secret is required")
	}
	if *nodeID == "" {
		host, _ := os.Hostname()
		*nodeID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	st, err := so.open(ctx, log, pebblestore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	reg := newRegistry()
	cmd, err := connector.NewCommander(ctx, connector.CommanderConfig{Kafka: k, NodeID: *nodeID, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer cmd.Close()
	var allowed []string
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			allowed = append(allowed, o)
		}
	}
	gcfg := connector.GatewayConfig{
		Listen: *listen, TokenSecret: []byte(*tokenSecret), APIKey: []byte(*apiKey), AllowedOrigins: allowed, Logger: log,
		PushListen: *pushListen, PushSecret: []byte(*pushSecret), PushAdvertise: *pushAdvertise, HeartbeatInterval: *heartbeat,
		Registerer: reg, Metrics: reg,
	}
	limits(&gcfg)
	g, err := connector.NewGateway(gcfg, cmd, st)
	if err != nil {
		return err
	}
	return runWithAdmin(ctx, *adminAddr, k, st, log, reg, func(ctx context.Context) error {
		return connector.Serve(ctx, cmd, g)
	})
}

func runFanout(ctx context.Context, args []string) error {
	rf := newRoleFlags("fanout")
	fs := rf.fs
	group := fs.String("group", "parley-fanout", "consumer group")
	instance := fs.String("instance-id", "", "name of this instance in logs and pushes (default: hostname-pid)")
	pushSecret := fs.String("push-secret", "", "the connectors' push secret (required, at least 16 bytes)")
	commitEvery := commitIntervalFlag(fs)
	so := storeFlags(fs, "parley-data/store", false)
	adminAddr := adminFlag(fs)
	log, k, err := rf.parse(args)
	if err != nil {
		return err
	}
	commitInterval, err := commitEvery()
	if err != nil {
		return err
	}
	if *instance == "" {
		host, _ := os.Hostname()
		*instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	// Memberships come from the writer's store; an embedded store belongs
	// to one process, so a fanout on its own needs the shared one.
	if isC, err := so.isCassandra(); err != nil {
		return err
	} else if !isC {
		return errors.New("fanout reads memberships from the writer's store: give it --cassandra (an embedded store is for parley dev, which runs fanout itself)")
	}
	st, err := so.open(ctx, log, pebblestore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	reg := newRegistry()
	f, err := fanout.New(fanout.Config{Kafka: k, Group: *group, InstanceID: *instance, PushSecret: []byte(*pushSecret), CommitInterval: commitInterval, Logger: log, Registerer: reg}, st)
	if err != nil {
		return err
	}
	log.Info("fanout starting", "store", so.describe())
	return runWithAdmin(ctx, *adminAddr, k, st, log, reg, f.Run)
}
