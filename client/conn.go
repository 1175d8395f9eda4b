package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"github.com/parley-im/parley/schema"
)

// maxReadBytes bounds a server frame (a history page is about 1 MiB).
const maxReadBytes = 32 << 20

// request is any client frame; fields an op does not use are left out.
type request struct {
	Op      string          `json:"op"`
	ID      string          `json:"id,omitempty"`
	Token   string          `json:"token,omitempty"`
	Device  string          `json:"device,omitempty"`
	Conv    string          `json:"conv,omitempty"`
	CMID    string          `json:"cmid,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Body    json.RawMessage `json:"body,omitempty"`
	Target  int64           `json:"target,omitempty"`
	Seq     int64           `json:"seq,omitempty"`
	Members []string        `json:"members,omitempty"`
	Title   string          `json:"title,omitempty"`
	Add     []string        `json:"add,omitempty"`
	Remove  []string        `json:"remove,omitempty"`
	After   *int64          `json:"after,omitempty"`
	Before  *int64          `json:"before,omitempty"`
	Limit   int             `json:"limit,omitempty"`
}

// encodeRequest encodes req as encoding/json does, byte for byte
// (TestEncodeRequest, FuzzEncodeRequest), without reflection: every
// request a client sends passes here, and json.Marshal took a tenth of the
// load tool's CPU in the dm run. The body is written as it is: it always
// comes from encodeBody (json.Marshal's output, which is compact and
// escaped as json.Marshal would write it again).
func encodeRequest(req *request) []byte {
	n := 128 + len(req.ID) + len(req.Token) + len(req.Device) + len(req.Conv) + len(req.CMID) + len(req.Kind) + len(req.Body) + len(req.Title)
	for _, vs := range [...][]string{req.Members, req.Add, req.Remove} {
		for _, v := range vs {
			n += len(v) + 3
		}
	}
	b := make([]byte, 0, n) // room for everything but escapes
	b = append(b, `{"op":`...)
	b = schema.AppendJSONString(b, req.Op)
	str := func(key, v string) {
		if v != "" {
			b = append(b, key...)
			b = schema.AppendJSONString(b, v)
		}
	}
	num := func(key string, v int64) {
		b = append(b, key...)
		b = strconv.AppendInt(b, v, 10)
	}
	list := func(key string, vs []string) {
		if len(vs) == 0 {
			return
		}
		b = append(b, key...)
		for i, v := range vs {
			if i == 0 {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			b = schema.AppendJSONString(b, v)
		}
		b = append(b, ']')
	}
	str(`,"id":`, req.ID)
	str(`,"token":`, req.Token)
	str(`,"device":`, req.Device)
	str(`,"conv":`, req.Conv)
	str(`,"cmid":`, req.CMID)
	str(`,"kind":`, req.Kind)
	if len(req.Body) > 0 {
		b = append(append(b, `,"body":`...), req.Body...)
	}
	if req.Target != 0 {
		num(`,"target":`, req.Target)
	}
	if req.Seq != 0 {
		num(`,"seq":`, req.Seq)
	}
	list(`,"members":`, req.Members)
	str(`,"title":`, req.Title)
	list(`,"add":`, req.Add)
	list(`,"remove":`, req.Remove)
	if req.After != nil {
		num(`,"after":`, *req.After)
	}
	if req.Before != nil {
		num(`,"before":`, *req.Before)
	}
	if req.Limit != 0 {
		num(`,"limit":`, int64(req.Limit))
	}
	return append(b, '}')
}

// frame is any server frame: a reply (with the request's id) or a push.
// The event push {"op":"event", <event>} fills the embedded Event; an ack
// uses its conv, cmid, msg_id and seq.
type frame struct {
	Op string `json:"op"`
	ID string `json:"id"`
	Event
	User   string `json:"user"`
	Device string `json:"device"`
	Node   string `json:"node"`
	Limits *struct {
		Rate  float64 `json:"rate"`
		Burst int     `json:"burst"`
	} `json:"limits"`
	Events  []Event        `json:"events"`
	Convs   []Conversation `json:"convs"`
	More    bool           `json:"more"`
	Code    string         `json:"code"`
	Message string         `json:"message"`
}

// conn is one authenticated WebSocket connection.
type conn struct {
	c          *Client
	ws         *websocket.Conn
	url        string
	node, user string

	// The frames waiting to be written, and whether a goroutine is writing
	// them (see writeFrame).
	wmu     sync.Mutex
	writing bool
	closing bool        // a close frame is queued: nothing may follow it
	next    *writeBatch // frames queued while a batch is being written
	spare   []byte      // a written batch's buffer, for the next
	// pace keeps requests under the rate the server announced in auth_ok
	// (nil if it announced none).
	pace *rate.Limiter

	// The requests waiting for their replies, by id. Each gets one frame
	// on its channel: its reply, lostFrame when the connection ends first,
	// or timedOutFrame from the sweep (see sweep).
	pmu      sync.Mutex
	pending  map[string]waiter
	sweeping bool        // the sweep is scheduled
	sweeper  *time.Timer // runs the sweep; nil before the first request

	done      chan struct{} // closed when the connection is finished
	closeOnce sync.Once
	stopClose func() bool // unregisters the close-on-client-stop hook; run calls it

	lastRead, lastWrite atomic.Int64 // monoNow, ns
}

// monoStart is the origin of monoNow.
var monoStart = time.Now()

// monoNow is the time since monoStart on the monotonic clock, in ns: half
// the cost of time.Now, which the read loop would otherwise pay per frame.
func monoNow() int64 { return int64(time.Since(monoStart)) }

// connect dials url, authenticates, and returns the connection (not yet
// reading). It is closed, with a normal close frame, when the client stops.
func (c *Client) connect(ctx context.Context, url string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	tok, err := c.cfg.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("parley: token: %w", err)
	}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.cfg.RequestTimeout,
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  8 << 10,
		NetDialContext:   c.cfg.NetDial,
	}
	ws, resp, err := d.DialContext(ctx, url, c.cfg.Header)
	if err != nil {
		if resp != nil {
			return nil, &upgradeError{status: resp.StatusCode, err: err}
		}
		return nil, fmt.Errorf("parley: dial %s: %w", url, err)
	}
	// Abort the authentication when ctx ends.
	abort := context.AfterFunc(ctx, func() { ws.Close() })
	f, err := authenticate(ws, tok, c.cfg.Device, c.cfg.RequestTimeout)
	if !abort() {
		ws.Close()
		return nil, fmt.Errorf("parley: authenticate at %s: %w", url, context.Cause(ctx))
	}
	if err != nil {
		ws.Close()
		return nil, err
	}
	ws.SetReadLimit(maxReadBytes)
	cn := &conn{c: c, ws: ws, url: url, node: f.Node, user: f.User, pending: make(map[string]waiter), done: make(chan struct{})}
	if l := f.Limits; l != nil && l.Rate > 0 && l.Burst > 0 {
		// A margin below the server's limit: frames may bunch up on the way.
		cn.pace = rate.NewLimiter(rate.Limit(l.Rate*0.9), max(1, l.Burst/2))
	}
	now := monoNow()
	cn.lastRead.Store(now)
	cn.lastWrite.Store(now)
	cn.stopClose = context.AfterFunc(c.ctx, func() { cn.shutdown(websocket.CloseNormalClosure, "client closed") })
	go cn.keepalive()
	return cn, nil
}

// authenticate sends the auth frame and waits for auth_ok.
func authenticate(ws *websocket.Conn, token, device string, timeout time.Duration) (*frame, error) {
	b := encodeRequest(&request{Op: "auth", ID: "auth", Token: token, Device: device})
	_ = ws.SetWriteDeadline(time.Now().Add(timeout))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return nil, fmt.Errorf("parley: send auth: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return nil, closeErr(err)
		}
		var f frame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch {
		case f.Op == "auth_ok":
			return &f, nil
		case f.Op == "error" && (f.ID == "auth" || f.ID == ""):
			return nil, &Error{Code: f.Code, Message: f.Message}
		}
	}
}

// closeErr turns a WebSocket close into a *CloseError.
func closeErr(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure { // 1006: no close frame, the network failed
		return &CloseError{Code: ce.Code, Reason: ce.Text}
	}
	return err
}

// close finishes the connection: waiters see done, the reader fails.
func (cn *conn) close() {
	cn.closeOnce.Do(func() {
		close(cn.done)
		cn.ws.Close()
		cn.failPending(lostFrame, math.MaxInt64)
	})
}

// shutdown sends a close frame after the frames queued before it, waiting
// at most closeWriteTimeout, then closes.
func (cn *conn) shutdown(code int, reason string) {
	sent := make(chan struct{})
	go func() {
		_ = cn.writeFrame(opClose, websocket.FormatCloseMessage(code, reason))
		close(sent)
	}()
	t := time.NewTimer(closeWriteTimeout)
	select {
	case <-sent:
	case <-t.C:
	}
	t.Stop()
	cn.close()
}

// waiter is a request waiting for its reply.
type waiter struct {
	ch       chan *frame // buffered: one frame
	deadline int64       // monoNow
}

// Stand-ins for a reply that will not come: the connection ended, or the
// request timed out.
var (
	lostFrame     = &frame{}
	timedOutFrame = &frame{}
)

// register makes ch the channel of request id's reply, due within the
// request timeout.
func (cn *conn) register(id string, ch chan *frame) {
	cn.pmu.Lock()
	cn.pending[id] = waiter{ch: ch, deadline: monoNow() + int64(cn.c.cfg.RequestTimeout)}
	if !cn.sweeping {
		cn.sweeping = true
		d := sweepInterval(cn.c.cfg.RequestTimeout)
		if cn.sweeper == nil {
			cn.sweeper = time.AfterFunc(d, cn.sweep)
		} else {
			cn.sweeper.Reset(d)
		}
	}
	cn.pmu.Unlock()
}

func (cn *conn) unregister(id string) {
	cn.pmu.Lock()
	delete(cn.pending, id)
	cn.pmu.Unlock()
}

// resolve hands a reply to its waiter, if one is still waiting.
func (cn *conn) resolve(f *frame) {
	cn.pmu.Lock()
	w, ok := cn.pending[f.ID]
	delete(cn.pending, f.ID)
	cn.pmu.Unlock()
	if ok {
		w.ch <- f
	}
}

// failPending ends the wait of every request whose deadline is before due
// (monoNow, or math.MaxInt64 for all of them) with f.
func (cn *conn) failPending(f *frame, due int64) {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	for id, w := range cn.pending {
		if w.deadline < due {
			delete(cn.pending, id)
			w.ch <- f
		}
	}
}

// sweep ends the wait of the requests past their deadline, and comes
// again while any request waits: so a request without a reply gets
// ErrNoReply within an eighth of the request timeout after it runs out,
// and one sweep does for all of a busy connection's requests what a timer
// each would.
func (cn *conn) sweep() {
	cn.failPending(timedOutFrame, monoNow())
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if len(cn.pending) == 0 {
		cn.sweeping = false
		return
	}
	cn.sweeper.Reset(sweepInterval(cn.c.cfg.RequestTimeout))
}

// sweepInterval is how often waiting requests are checked against their
// deadline.
func sweepInterval(timeout time.Duration) time.Duration { return max(timeout/8, time.Millisecond) }

// readLoop reads frames until the connection ends and returns why: a
// *CloseError when the server closed it, another error otherwise.
func (cn *conn) readLoop() error {
	defer cn.close()
	c := cn.c
	// A connection that received nothing for three ping intervals is
	// given up. The deadline moves on only once less than that is left,
	// by a quarter interval more (so it is given up after 3 to 3.25
	// intervals): setting it for every frame was 4% of a busy client.
	idle := 3 * c.cfg.PingInterval
	slack := c.cfg.PingInterval / 4
	deadline := monoNow() + int64(idle+slack)
	_ = cn.ws.SetReadDeadline(time.Now().Add(idle + slack))
	var buf bytes.Buffer // reused: decodeFrame keeps nothing of its input
	// Reused, emptied before each frame: a push is copied out of it, and a
	// reply gets a copy of its own.
	var f frame
	for {
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{} // a large history page is not kept
		}
		buf.Reset()
		_, r, err := cn.ws.NextReader()
		if err == nil {
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			return closeErr(err)
		}
		data := buf.Bytes()
		now := monoNow()
		cn.lastRead.Store(now)
		if deadline-now < int64(idle) {
			deadline = now + int64(idle+slack)
			_ = cn.ws.SetReadDeadline(time.Now().Add(idle + slack))
		}
		f = frame{}
		if err := decodeFrame(data, &f); err != nil {
			c.log.Warn("undecodable frame", "err", err)
			continue
		}
		switch {
		case f.Op == "event":
			if f.Conv == "" || f.Seq <= 0 {
				c.log.Warn("push without conv or seq", "frame", string(data))
				continue
			}
			c.q.addEvent(f.Event)
		case f.Op == "typing" && f.ID == "":
			select {
			case c.typings <- Typing{Conv: f.Conv, From: f.From}:
			default:
			}
		case f.ID != "":
			if f.Op == "created" && f.Conv != "" {
				// Queued before any push this connection brings after the
				// reply, so the conversation is tracked from seq 0 first.
				c.q.add(item{kind: itemTrack, conv: f.Conv, seq: 0})
			}
			reply := f
			cn.resolve(&reply)
		case f.Op == "error":
			c.log.Debug("error without a request id", "code", f.Code, "message", f.Message)
		default:
			c.log.Debug("unexpected frame", "op", f.Op)
		}
	}
}

// keepalive sends a ping when the connection has been quiet for the ping
// interval, so that neither side's idle timeout ends it.
func (cn *conn) keepalive() {
	every := cn.c.cfg.PingInterval
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-cn.done:
			return
		case <-t.C:
		}
		now := monoNow()
		if now-cn.lastWrite.Load() >= int64(every) || now-cn.lastRead.Load() >= int64(every) {
			// The pong answers nobody; it only shows the connection lives.
			b := encodeRequest(&request{Op: "ping", ID: cn.c.newID()})
			if cn.write(b) == nil {
				cn.c.st.pings.Add(1)
			}
		}
	}
}
