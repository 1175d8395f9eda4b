package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/parley-im/parley/internal/metrics"
	"github.com/parley-im/parley/schema"
	"github.com/parley-im/parley/store"
)

// GatewayConfig configures the WebSocket gateway. Zero fields take the
// documented defaults.
type GatewayConfig struct {
	// Listen is the public listener's address; default "127.0.0.1:8080".
	Listen string
	// TokenSecret verifies the clients' HS256 tokens. Required.
	TokenSecret []byte
	// AllowedOrigins lists the Origin values a browser may connect from. An
	// Origin naming the request's own host is always allowed, and so is a
	// request without Origin (not a browser). AllowAnyOrigin allows all (the
	// all-in-one default, when the listener is loopback-only).
	AllowedOrigins []string
	AllowAnyOrigin bool
	// MaxFrameBytes is the largest frame a client may send; default 64 KiB.
	MaxFrameBytes int64
	// AuthTimeout is how long a connection has to send its auth frame;
	// default 10s.
	AuthTimeout time.Duration
	// IdleTimeout closes a connection that sent nothing for this long;
	// default 60s.
	IdleTimeout time.Duration
	// MaxConnsPerUser bounds a user's connections on this node; default 16.
	MaxConnsPerUser int
	// RatePerSecond and RateBurst limit a connection's frames; defaults 20
	// and 40. A frame over the limit gets rate_limited; MaxStrikes of them
	// in a row (default 50) close the connection with 4008.
	RatePerSecond float64
	RateBurst     int
	MaxStrikes    int
	// QueueFrames bounds a connection's outbound queue while the client
	// does not read: a connection with this many frames queued whose
	// writer has been stuck in one write for a quarter of WriteTimeout is
	// closed with 4003. (A burst of more frames to a client that reads
	// waits in the queue; 16 MiB queued closes any connection.) Default 256.
	QueueFrames int
	// WriteTimeout bounds one write to a WebSocket client (a write is
	// given 1 to 1.25 times it) and each response of the HTTP API and the
	// push endpoint; default 10s.
	WriteTimeout time.Duration
	// DrainWindow spreads the 4009 closes of a shutdown; default 5s.
	DrainWindow time.Duration
	// PushListen is the address of the internal push endpoint fanout posts
	// to (not public); empty: none. PushSecret, required with it, is the
	// shared secret fanout sends.
	PushListen string
	PushSecret []byte
	// PushAdvertise is the push address fanout dials, published with the
	// node's heartbeat; default the push listener's address.
	PushAdvertise string
	// HeartbeatInterval is how often the node tells the presence topic it
	// is alive; default 5s. Fanout counts a node silent for 3 intervals as
	// dead. Presence is published only with a push endpoint.
	HeartbeatInterval time.Duration
	// APIKey is the bearer key of the HTTP API (/v1/… besides /v1/ws);
	// empty: the API answers 503 unavailable. At least 16 bytes.
	APIKey []byte
	// APIMaxInFlight bounds the API requests served at once; beyond it a
	// request gets 429 rate_limited. Default 1024.
	APIMaxInFlight int
	// DevLoginCode, if set, enables /dev/token, which mints a token for
	// any user without the API key to whoever presents this code
	// (devlogin.go): for `parley dev` only, which alone sets it, and prints
	// the web client's address with the code.
	DevLoginCode string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the gateway's metrics (parley_connector_*, and
	// parley_store_* with role="connector"); nil: a private registry
	// nobody scrapes. Give each gateway of a process its own.
	Registerer prometheus.Registerer
	// Metrics is served on the public listener's /metrics (the process's
	// registry); nil: /metrics is not found.
	Metrics prometheus.Gatherer
}

func (c GatewayConfig) withDefaults() GatewayConfig {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxConnsPerUser == 0 {
		c.MaxConnsPerUser = 16
	}
	if c.RatePerSecond == 0 {
		c.RatePerSecond = 20
	}
	if c.RateBurst == 0 {
		c.RateBurst = 40
	}
	if c.MaxStrikes == 0 {
		c.MaxStrikes = 50
	}
	if c.QueueFrames == 0 {
		c.QueueFrames = 256
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.DrainWindow == 0 {
		c.DrainWindow = 5 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.APIMaxInFlight == 0 {
		c.APIMaxInFlight = defaultAPIMaxInFlight
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Gateway serves the client protocol on /v1/ws and the HTTP API beside it.
type Gateway struct {
	cfg   GatewayConfig
	log   *slog.Logger
	cmd   *Commander
	store store.Store
	hub   *hub
	// counts bounds the node's unread counts in flight (sync.go).
	counts chan struct{}
	api    *httpAPI
	up     websocket.FastHTTPUpgrader
	// presence is nil without a push endpoint: nothing can reach this
	// node's sessions then, so it does not claim them.
	presence *presence

	mu       sync.Mutex
	ln       net.Listener
	pushLn   net.Listener
	addr     net.Addr
	draining bool
	wg       sync.WaitGroup // sessions
	conns    atomic.Int64   // WebSocket connections held (Connections)
	m        gatewayMetrics
	metrics  fasthttp.RequestHandler // /metrics; nil without GatewayConfig.Metrics
}

func (g *Gateway) isDraining() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.draining
}

func (g *Gateway) countClose(code int) {
	g.m.closed.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Closes returns how many connections this gateway closed with code
// (parley_connector_connections_closed_total).
func (g *Gateway) Closes(code int) int64 {
	return counterValue(g.m.closed.WithLabelValues(strconv.Itoa(code)))
}

// Connections returns how many WebSocket connections the gateway holds,
// from the upgrade until the connection is closed: sessions, connections
// still authenticating, and refused ones waiting for the client's close.
func (g *Gateway) Connections() int64 { return g.conns.Load() }

// NewGateway returns a gateway that sends commands through cmd and reads
// history from st; Run serves it.
func NewGateway(cfg GatewayConfig, cmd *Commander, st store.Store) (*Gateway, error) {
	cfg = cfg.withDefaults()
	if len(cfg.TokenSecret) < 32 {
		return nil, errors.New("connector: the token secret must be at least 32 bytes")
	}
	if cfg.RatePerSecond < 0 || cfg.RateBurst < 0 || cfg.MaxConnsPerUser < 0 || cfg.MaxStrikes < 0 || cfg.QueueFrames < 0 || cfg.MaxFrameBytes < 0 || cfg.APIMaxInFlight < 0 {
		return nil, errors.New("connector: limits must not be negative")
	}
	if cmd == nil || st == nil {
		return nil, errors.New("connector: the gateway needs a commander and a store")
	}
	if cfg.HeartbeatInterval < time.Millisecond || cfg.HeartbeatInterval > schema.MaxHeartbeatInterval {
		return nil, fmt.Errorf("connector: the heartbeat interval must be 1ms to %v", schema.MaxHeartbeatInterval)
	}
	if cfg.PushListen != "" && len(cfg.PushSecret) < 16 {
		return nil, errors.New("connector: the push endpoint needs a push secret of at least 16 bytes")
	}
	api, err := newHTTPAPI(cfg)
	if err != nil {
		return nil, err
	}
	st, err = metrics.InstrumentStore(cfg.Registerer, "connector", st)
	if err != nil {
		return nil, fmt.Errorf("connector: metrics: %w", err)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("role", "connector", "node", cmd.cfg.NodeID), cmd: cmd, store: st, hub: newHub(), api: api,
		counts: make(chan struct{}, unreadNodeParallelism)}
	if g.m, err = newGatewayMetrics(cfg.Registerer, func() float64 { return float64(g.conns.Load()) }); err != nil {
		return nil, fmt.Errorf("connector: metrics: %w", err)
	}
	if cfg.Metrics != nil {
		// Anyone who reaches the public listener may scrape: two scrapes
		// at a time, each bounded.
		g.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{
			MaxRequestsInFlight: 2, Timeout: 10 * time.Second,
		}))
	}
	g.up = websocket.FastHTTPUpgrader{
		// The library does the handshake; the session reads and writes the
		// connection itself, so its buffers are the smallest, unused.
		ReadBufferSize:  128,
		WriteBufferSize: 128,
		WriteBufferPool: new(sync.Pool),
		CheckOrigin:     g.checkOrigin,
	}
	return g, nil
}

// Listen binds the public listener (Run does it if not done yet), so that
// Addr is known before Run.
func (g *Gateway) Listen() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("connector: listen %s: %w", g.cfg.Listen, err)
	}
	if g.cfg.PushListen != "" {
		pln, err := net.Listen("tcp", g.cfg.PushListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("connector: listen %s: %w", g.cfg.PushListen, err)
		}
		g.pushLn = pln
		advertise := g.cfg.PushAdvertise
		if advertise == "" {
			advertise = pln.Addr().String()
		}
		g.presence = &presence{cl: g.cmd.producer, topic: g.cmd.topics.Presence, node: g.cmd.cfg.NodeID,
			pushAddr: advertise, interval: g.cfg.HeartbeatInterval, log: g.log, hub: g.hub, now: time.Now, dirty: make(map[string]bool)}
	}
	g.ln, g.addr = ln, ln.Addr()
	return nil
}

// PushAddr is the push endpoint's address once listening (nil if none).
func (g *Gateway) PushAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pushLn == nil {
		return nil
	}
	return g.pushLn.Addr()
}

// Addr is the address Run listens on, once it does.
func (g *Gateway) Addr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr
}

// checkOrigin applies the allow-list: no Origin (not a browser), the
// request's own host, a listed origin, or any when AllowAnyOrigin.
func (g *Gateway) checkOrigin(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek("Origin")
	if len(origin) == 0 || g.cfg.AllowAnyOrigin {
		return true
	}
	for _, o := range g.cfg.AllowedOrigins {
		if string(origin) == o {
			return true
		}
	}
	// Same host: the Origin's host[:port] equals the Host header.
	if i := bytes.Index(origin, []byte("://")); i >= 0 {
		return bytes.Equal(origin[i+3:], ctx.Host())
	}
	return false
}

func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/v1/ws":
		g.mu.Lock()
		draining := g.draining
		if !draining {
			g.wg.Add(1)
		}
		g.mu.Unlock()
		if draining {
			ctx.Error("draining", fasthttp.StatusServiceUnavailable)
			return
		}
		// serve calls g.wg.Done when the session ends.
		err := g.up.Upgrade(ctx, g.serve)
		if err != nil {
			g.wg.Done()
			g.log.Debug("upgrade refused", "err", err, "origin", string(ctx.Request.Header.Peek("Origin")))
		}
	case "/healthz":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"ok":true}`)
	case "/readyz":
		g.readyz(ctx)
	case "/", "/app.css", "/app.js": // the web client (webclient.go)
		g.serveWeb(ctx)
	case "/dev/token": // 404 unless DevLoginCode (devlogin.go)
		g.devToken(ctx)
	case "/metrics":
		if g.metrics == nil {
			apiError(ctx, schema.CodeNotFound, "no such endpoint")
			return
		}
		g.metrics(ctx)
	default:
		if bytes.HasPrefix(ctx.Path(), []byte("/v1/")) {
			g.handleAPI(ctx)
			return
		}
		apiError(ctx, schema.CodeNotFound, "no such endpoint")
	}
}

// Run serves until ctx ends, then drains: it stops accepting, closes every
// connection with 4009 spread over the drain window (so clients do not all
// reconnect at once), lets in-flight commands finish, and returns.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.Listen(); err != nil {
		return err
	}
	g.mu.Lock()
	ln, pushLn, pres := g.ln, g.pushLn, g.presence
	g.mu.Unlock()
	if pushLn != nil {
		// Fanout posts at once on a connection it opens, and keeps it for a
		// minute at most between posts: a peer that trickles a request,
		// never reads the answer or idles longer is cut off.
		push := &fasthttp.Server{Handler: g.handlePush, Name: "parley-push", MaxRequestBodySize: 64 << 20, NoDefaultDate: true,
			ReadTimeout: pushReadTimeout, WriteTimeout: g.cfg.WriteTimeout, IdleTimeout: pushIdleTimeout,
			Logger: httpLogger{g.log}, SecureErrorLogMessage: true}
		pushDone := make(chan struct{})
		go func() { defer close(pushDone); _ = push.Serve(retryListener{pushLn, g.log}) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = push.ShutdownWithContext(sctx)
			<-pushDone
		}()
	}
	if pres != nil {
		if err := pres.start(ctx, g.cmd.cfg.Kafka.ClientOpts()); err != nil {
			return err
		}
		hbCtx, stopHeartbeat := context.WithCancel(context.Background())
		hbDone := make(chan struct{})
		go func() { defer close(hbDone); pres.run(hbCtx) }()
		defer func() {
			// After the drain: every session's record is gone; now the
			// node's own.
			stopHeartbeat()
			<-hbDone
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := pres.stop(sctx); err != nil {
				g.log.Warn("presence: removing the heartbeat failed; fanout will count this node dead after 3 intervals", "err", err)
			}
		}()
	}
	// A request (an upgrade included) must arrive whole within the auth
	// timeout, and an answer must be taken within the write timeout: a
	// client that trickles its request or never reads the answers (while
	// pipelining more) is cut off rather than holding a connection and its
	// buffers. Keep-alive connections idle for the auth timeout are closed.
	srv := &fasthttp.Server{
		Handler:            g.handle,
		Name:               "parley",
		ErrorHandler:       requestError,
		ReadTimeout:        g.cfg.AuthTimeout,
		WriteTimeout:       g.cfg.WriteTimeout,
		MaxRequestBodySize: maxRequestBody,
		NoDefaultDate:      true,
		// The server's own messages (requests it could not read) go to the
		// log at debug level, without the request's bytes: they may hold
		// the API key.
		Logger:                httpLogger{g.log},
		SecureErrorLogMessage: true,
		// A session outlives the upgrade handler and closes its connection
		// itself; the server's state for the request is freed meanwhile.
		KeepHijackedConns: true,
	}
	g.log.Info("public listener", "addr", ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(retryListener{ln, g.log}) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.draining = true
	g.mu.Unlock()
	_ = ln.Close() // stop accepting
	sessions := g.hub.all()
	for _, s := range sessions {
		if len(sessions) > 1 {
			time.Sleep(g.cfg.DrainWindow / time.Duration(len(sessions)))
		}
		s.drain()
	}
	g.wg.Wait()
	// The WebSocket connections are gone; now the server itself (it would
	// otherwise wait for them).
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.ShutdownWithContext(sctx)
	<-served
	return nil
}

// Serve runs the gateway and its commander until ctx ends. The commander
// outlives the gateway's drain, so that commands in flight get their
// outcomes; if the commander fails, the gateway stops too.
func Serve(ctx context.Context, cmd *Commander, g *Gateway) error {
	gctx, stopGateway := context.WithCancel(ctx)
	defer stopGateway()
	cctx, stopCommander := context.WithCancel(context.Background())
	defer stopCommander()
	cmdDone := make(chan error, 1)
	go func() {
		err := cmd.Run(cctx)
		if err != nil {
			stopGateway()
		}
		cmdDone <- err
	}()
	err := g.Run(gctx)
	stopCommander()
	if cerr := <-cmdDone; cerr != nil {
		err = errors.Join(err, fmt.Errorf("outcome reader: %w", cerr))
	}
	return err
}

// httpLogger takes the HTTP servers' own messages into the log at debug
// level.
type httpLogger struct{ log *slog.Logger }

func (l httpLogger) Printf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("http server", "msg", fmt.Sprintf(format, args...))
	}
}
