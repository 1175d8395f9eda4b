package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/schema"
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// URLs are the WebSocket endpoints (ws://host:port/v1/ws) of one or
	// more connector nodes. The first connection tries them in order;
	// reconnects go round-robin to the next one. Required.
	URLs []string
	// Token returns the token to authenticate with; it is called on every
	// (re)connect. Required.
	Token func(ctx context.Context) (string, error)
	// Device is this client's device id. Required.
	Device string
	// Header holds extra headers for the upgrade request (e.g. Origin).
	Header http.Header
	// NetDial, if set, opens the TCP connections (e.g. from a chosen local
	// address); default: net.Dialer's DialContext.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MinBackoff and MaxBackoff bound the jittered exponential backoff of
	// reconnects and retries; defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one request attempt (and the connect and
	// authentication); default 15s. A request without a reply gets
	// ErrNoReply within an eighth of it after it runs out.
	RequestTimeout time.Duration
	// EventBuffer is the capacity of the Events channel; default 256.
	// The channel's memory is allocated up front and cycled through (about
	// 200 bytes an event), so a larger buffer costs memory and cache for
	// little: pushes that arrive while the application is busy wait in the
	// client's queue (4×max(EventBuffer, 4096) pushes) anyway.
	EventBuffer int
	// Logger; default slog.Default().
	Logger *slog.Logger

	// PingInterval: a ping is sent when nothing was sent or received for
	// this long, and a connection that received nothing for three
	// intervals (up to a quarter interval more) is given up; default 20s.
	PingInterval time.Duration
	// MaxFrameBytes is the largest request frame the server accepts;
	// a larger request fails with a too_large *Error without being sent
	// (the server would close the connection). Default 64 KiB.
	MaxFrameBytes int
	// Tracked gives conversations to track from the start, each with the
	// last seq the application already holds (see Track).
	Tracked map[string]int64

	// queueLimit bounds the pushes waiting for the deliverer; default
	// 4×max(EventBuffer, 4096). Settable by tests (export_test.go).
	queueLimit int
	// lateCatchUp, when set, starts each connection's late catch-up when
	// it is closed instead of lateCatchUp after the connect. Settable by
	// tests (export_test.go).
	lateCatchUp <-chan struct{}
}

func (c Config) withDefaults() (Config, error) {
	if len(c.URLs) == 0 {
		return c, errors.New("parley: Config.URLs is empty")
	}
	if c.Token == nil {
		return c, errors.New("parley: Config.Token is nil")
	}
	if c.Device == "" {
		return c, errors.New("parley: Config.Device is empty")
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 15 * time.Second
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 20 * time.Second
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.queueLimit <= 0 {
		c.queueLimit = 4 * max(c.EventBuffer, 4096)
	}
	return c, nil
}

// Event is an event of a conversation, as the server pushes it and history
// returns it (PROTOCOL.md §2; the form is defined in package schema).
// Fields that do not apply to a type are empty. For "created", Kind is the
// conversation kind and Title the group title.
type Event = schema.EventJSON

// Conversation is one entry of Sync: a conversation the user is in, its
// last seq, the user's read cursor, and the messages by others after it
// (counted up to 1,000).
type Conversation = schema.ConvJSON

// Ack is the outcome of a send, edit or revoke: the message's id and seq
// (the original's, for a repeated cmid).
type Ack struct {
	Conv, CMID, MsgID string
	Seq               int64
}

// Typing is another member's typing notice (ephemeral).
type Typing struct {
	Conv, From string
}

// Stats counts what a client has done since Dial.
type Stats struct {
	Connects     int64 // connections authenticated, the first included
	Requests     int64 // request attempts written to a socket
	Retries      int64 // request attempts repeated (unavailable, no reply, connection lost, ...)
	Delivered    int64 // events delivered on Events
	Duplicates   int64 // pushes dropped as already delivered
	Gaps         int64 // pushes that revealed a gap
	HistoryPages int64 // history pages fetched for gap fills and catch-ups
	Overflows    int64 // pushes dropped because the delivery queue was full (then recovered from history)
	Pings        int64 // keepalive pings sent on quiet connections
}

type stats struct {
	connects, requests, retries, delivered, duplicates, gaps, historyPages, pings atomic.Int64
}

// Client is a connection to Parley that survives reconnects. Its methods
// are safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // ends when the client stops
	cancel context.CancelFunc

	errMu sync.Mutex
	err   error // why the client stopped

	mu     sync.Mutex
	cur    *conn         // nil while reconnecting
	connCh chan struct{} // closed and replaced when cur changes
	node   string
	user   string

	urlIdx  int // of the current or last connection; run's goroutine only
	reqID   atomic.Uint64
	q       *queue
	events  chan Event
	typings chan Typing
	wg      sync.WaitGroup
	st      stats
}

// lateCatchUp is when the second catch-up after a connect runs.
const lateCatchUp = 3 * time.Second

// maxRefusals is how many refusals, with no successful connection between
// them, stop a client for good.
const maxRefusals = 3

// Dial connects to the first of cfg.URLs that accepts and authenticates,
// and returns once authenticated. If none does, it returns the last error:
// a *CloseError for a refusal (4001 bad token, 4004 too many connections,
// 4009 draining), or a network or token error. A refusal by 4001 or 4004 or
// an HTTP 401/403 ends the attempt at once; other failures try the next
// URL. ctx bounds Dial only; the client then runs until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "parley-client", "device", cfg.Device),
		connCh:  make(chan struct{}),
		q:       newQueue(cfg.queueLimit),
		events:  make(chan Event, cfg.EventBuffer),
		typings: make(chan Typing, 256),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var cn *conn
	for i, u := range cfg.URLs {
		cn, err = c.connect(ctx, u)
		if err == nil {
			c.urlIdx = i
			break
		}
		if refusal(err) || ctx.Err() != nil {
			break
		}
		c.log.Debug("connect failed", "url", u, "err", err)
	}
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.attach(cn)
	d := newDeliverer(c, cfg.Tracked)
	c.wg.Add(2)
	go c.run(cn)
	go d.loop()
	return c, nil
}

// Node returns the id of the connector node of the current (or, while
// reconnecting, the last) connection.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

// User returns the user id the server authenticated.
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Events returns the channel of events (see the package doc for the
// guarantee). It is closed when the client stops.
func (c *Client) Events() <-chan Event { return c.events }

// Typings returns the channel of typing notices of other members. Notices
// are dropped when it is full. It is closed when the client stops.
func (c *Client) Typings() <-chan Typing { return c.typings }

// Done is closed when the client stops: after Close, or after repeated
// refusals (see Err).
func (c *Client) Done() <-chan struct{} { return c.ctx.Done() }

// Err returns nil while the client runs, ErrClosed after Close, or the
// error that stopped it for good (a *CloseError, see the package doc).
func (c *Client) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Connects:     c.st.connects.Load(),
		Requests:     c.st.requests.Load(),
		Retries:      c.st.retries.Load(),
		Delivered:    c.st.delivered.Load(),
		Duplicates:   c.st.duplicates.Load(),
		Gaps:         c.st.gaps.Load(),
		HistoryPages: c.st.historyPages.Load(),
		Overflows:    c.q.droppedCount(),
		Pings:        c.st.pings.Load(),
	}
}

// Close closes the connection and stops the client: calls in flight fail
// with ErrClosed, and Events and Typings are closed. It waits for the
// client's goroutines to end.
func (c *Client) Close() error {
	c.stop(ErrClosed)
	c.wg.Wait()
	return nil
}

// stop ends the client with err (the first one wins).
func (c *Client) stop(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	c.cancel() // closes every connection (see connect)
}

// run owns the connection: it reads the current one (attached by Dial or
// by run) until it ends, then reconnects, until the client stops.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	defer close(c.typings) // the readers, run here, are its only senders
	fails, refused := 0, 0
	for {
		start := time.Now()
		err := cn.readLoop()
		cn.stopClose()
		c.detach(cn)
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(start) >= c.cfg.MaxBackoff {
			fails = 0 // it was a healthy connection
		}
		c.log.Info("connection lost; reconnecting", "node", cn.node, "err", err)
		for {
			if !sleepCtx(c.ctx, c.backoff(fails)) {
				return
			}
			fails++
			c.urlIdx = (c.urlIdx + 1) % len(c.cfg.URLs)
			u := c.cfg.URLs[c.urlIdx]
			cn, err = c.connect(c.ctx, u)
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			// Refusals count until a connection succeeds; an unreachable
			// node in between says nothing about the token.
			// 4004 passes: the node may still hold this device's old
			// connections for a moment.
			if refusal(err) && !IsClose(err, CloseTooMany) {
				refused++
				if refused >= maxRefusals {
					c.log.Error("refused; giving up", "url", u, "err", err)
					c.stop(err)
					return
				}
			}
			c.log.Info("reconnect failed", "url", u, "err", err)
		}
		refused = 0
		c.attach(cn)
	}
}

// attach makes cn the current connection and has the deliverer catch up
// every tracked conversation before it handles the pushes cn will bring.
func (c *Client) attach(cn *conn) {
	c.st.connects.Add(1)
	c.q.add(item{kind: itemCatchUp})
	c.mu.Lock()
	c.cur, c.node, c.user = cn, cn.node, cn.user
	close(c.connCh)
	c.connCh = make(chan struct{})
	c.mu.Unlock()
	// An event sequenced while the client was away may reach the store
	// only after this catch-up read it, and no push brings it if nothing
	// follows it: a second catch-up a little later collects it, in the
	// conversations no push came for meanwhile.
	late := func() {
		if c.current() == cn {
			c.q.add(item{kind: itemLateCatchUp})
		}
	}
	if c.cfg.lateCatchUp == nil {
		time.AfterFunc(lateCatchUp, late)
	} else {
		go func() {
			select {
			case <-c.cfg.lateCatchUp:
				late()
			case <-cn.done:
			}
		}()
	}
	c.log.Debug("connected", "node", cn.node, "url", cn.url)
}

func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	c.mu.Unlock()
}

// current returns the connection, or nil while there is none.
func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// waitConn waits for a connection until ctx ends or the client stops.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ch := c.cur, c.connCh
		c.mu.Unlock()
		if cn != nil {
			select {
			case <-cn.done: // ended; run has yet to detach it
			default:
				return cn, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, c.Err()
		}
	}
}

func (c *Client) newID() string { return strconv.FormatUint(c.reqID.Add(1), 36) }

// backoff returns the n-th delay (n from 0): MinBackoff doubling up to
// MaxBackoff, with jitter (a random point in its upper half).
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MinBackoff
	for i := 0; i < n && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	half := d / 2
	return half + rand.N(half+1)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// upgradeError is an HTTP answer other than 101 to the upgrade request.
type upgradeError struct {
	status int
	err    error
}

func (e *upgradeError) Error() string {
	return fmt.Sprintf("parley: upgrade refused with HTTP %d: %v", e.status, e.err)
}
func (e *upgradeError) Unwrap() error { return e.err }

// refusal reports whether err is the server refusing this client (as
// opposed to being unreachable or busy).
func refusal(err error) bool {
	var ue *upgradeError
	if errors.As(err, &ue) {
		return ue.status == http.StatusUnauthorized || ue.status == http.StatusForbidden
	}
	return IsClose(err, CloseBadToken) || IsClose(err, CloseTooMany)
}
