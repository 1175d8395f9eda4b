package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
	"github.com/parley-im/parley/store"
)

// presenceWait bounds how long auth_ok waits for the log to take the
// device's presence record.
const presenceWait = 3 * time.Second

// Per-connection bounds on work and memory.
const (
	maxInFlight        = 64       // requests awaiting their outcome
	maxHistoryInFlight = 2        // history requests being served
	maxHistoryBytes    = 1 << 20  // about, per history_ok frame
	maxQueueBytes      = 16 << 20 // queued outbound bytes; beyond: 4003
)

// session is one authenticated client connection.
type session struct {
	g            *Gateway
	conn         net.Conn // the TCP connection
	rd           *wsReader
	user, device string
	release      func(devices []string) // the hub's presence release; nil without presence
	limiter      *rate.Limiter          // the client's frame rate
	strikes      int                    // frames over the rate in a row

	// qmu guards the queue, the pong and the writer's state. No goroutine
	// writes while there is nothing to write: an idle session holds only
	// its reader.
	qmu      sync.Mutex
	queue    [][]byte      // frames to write; nil while idle
	pong     []byte        // the payload of a pong to write, or nil
	started  bool          // the writer may run (auth_ok goes first)
	writing  bool          // a writer goroutine runs, or is about to
	takenAt  int64         // when the writer last took the queue or was claimed (UnixNano)
	finished chan struct{} // closed once the close frame is written
	// writeDeadline is the connection's write deadline as the writer last
	// set it, on the monotonic clock (monoNow); only the running writer
	// touches it.
	writeDeadline time.Duration

	done      chan struct{}
	closeOnce sync.Once
	closeCode int // set before done is closed
	closeWhy  string
	inFlight  chan struct{}
	requests  sync.WaitGroup
	draining  atomic.Bool
	queued    atomic.Int64  // bytes in queue
	histories chan struct{} // history and sync requests being served
}

// drain refuses new requests, lets the in-flight ones answer, then closes
// the connection with 4009.
func (s *session) drain() {
	s.draining.Store(true)
	go func() {
		s.requests.Wait()
		s.close(CloseDraining, "server draining: reconnect")
	}()
}

// serve runs one connection from the upgrade: it reads the auth frame,
// sets the session up, and hands the reading to readLoop. It returns once
// the session runs, freeing the HTTP server's state for the connection.
func (g *Gateway) serve(wsConn *websocket.Conn) {
	// The library's connection did the handshake; the session reads and
	// writes the TCP connection itself from here on.
	conn := wsConn.NetConn()
	if u, ok := conn.(interface{ UnsafeConn() net.Conn }); ok {
		conn = u.UnsafeConn() // the HTTP server's wrapper reads through its own buffer
	}
	g.conns.Add(1)
	g.m.opened.Inc()
	s := &session{g: g, conn: conn, finished: make(chan struct{}), done: make(chan struct{}), inFlight: make(chan struct{}, maxInFlight),
		histories: make(chan struct{}, maxHistoryInFlight)}
	s.rd = newWSReader(conn, g.cfg.MaxFrameBytes, s.onPing)
	if !s.start() {
		s.rd.drop()
		s.hangUp()
		g.conns.Add(-1)
		g.wg.Done()
		return
	}
	go s.readLoop()
}

// start authenticates the client and sets the session up; false: the
// connection was refused (or is gone) and never became a session.
func (s *session) start() bool {
	g := s.g
	_ = s.conn.SetReadDeadline(time.Now().Add(g.cfg.AuthTimeout))
	data, err := s.rd.next()
	var pe *protocolError
	switch {
	case err == nil:
		g.m.framesIn.Inc()
	case errors.Is(err, errTooLarge):
		g.m.authFailures.WithLabelValues(authProtocol).Inc()
		s.refuse(CloseTooLarge, "message too large")
		return false
	case errors.As(err, &pe):
		g.m.authFailures.WithLabelValues(authProtocol).Inc()
		s.refuse(CloseProtocolError, pe.reason)
		return false
	case errors.Is(err, errClientClosed):
		s.refuse(CloseNormal, "")
		return false
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			g.m.authFailures.WithLabelValues(authNoAuth).Inc()
			s.refuse(CloseNoAuth, "no auth frame in time")
		}
		return false // gone
	}
	req, user, cerr := parseAuth(data, g.cfg.TokenSecret, time.Now())
	if cerr != nil {
		reason := authBadToken
		if cerr.Code == CloseNoAuth {
			reason = authNoAuth
		}
		g.m.authFailures.WithLabelValues(reason).Inc()
		s.refuse(int(cerr.Code), cerr.Reason)
		return false
	}
	s.user, s.device = user, req.Device
	var published chan error
	var claim func([]string)
	if g.presence != nil {
		published = make(chan error, 1)
		claim = func(devices []string) { g.presence.publish(user, devices, func(err error) { published <- err }) }
		s.release = func(devices []string) { g.presence.publish(user, devices, nil) }
	}
	// auth_ok is the first frame: queued before the session can get pushes,
	// written once the writer starts (after the presence record, below).
	s.send(&reply{Op: "auth_ok", ID: req.ID, User: user, Device: s.device, Node: g.cmd.cfg.NodeID,
		Limits: &connLimits{Rate: g.cfg.RatePerSecond, Burst: g.cfg.RateBurst}})
	if !g.hub.add(s, g.cfg.MaxConnsPerUser, claim) {
		g.m.authFailures.WithLabelValues(authTooMany).Inc()
		s.refuse(CloseTooMany, "too many connections for this user")
		return false
	}
	if published != nil {
		// Once the log has the device, every event sequenced from now on
		// is pushed here: fanout reads presence up to date before it pushes.
		// If the log is slow, the session goes on without that promise (the
		// client's gap detection recovers) and the record is retried.
		select {
		case err := <-published:
			if err != nil {
				g.log.Warn("presence not published before auth_ok", "user", user, "err", err)
			}
		case <-time.After(presenceWait):
			g.log.Warn("presence not published before auth_ok: timed out", "user", user)
		}
	}
	// Refuse a session that authenticated after a drain began.
	if g.isDraining() {
		g.hub.remove(s, s.release)
		s.refuse(CloseDraining, "server draining: reconnect")
		return false
	}
	s.limiter = rate.NewLimiter(rate.Limit(g.cfg.RatePerSecond), g.cfg.RateBurst)
	// From here on the writer alone writes to the connection, the pongs
	// and the close frame included.
	s.qmu.Lock()
	s.started = true
	s.kickLocked() // auth_ok, and what was queued behind it
	s.qmu.Unlock()
	return true
}

// onPing answers a WebSocket ping (one pong answers a burst of them); a
// ping is activity, extending the idle deadline.
func (s *session) onPing(data []byte) {
	s.qmu.Lock()
	s.pong = data
	if s.started {
		_ = s.conn.SetReadDeadline(time.Now().Add(s.g.cfg.IdleTimeout))
		s.kickLocked()
	}
	s.qmu.Unlock()
}

// refuse closes a connection that never became a session.
func (s *session) refuse(code int, reason string) {
	s.g.countClose(code)
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.conn.Write(closeFrame(code, reason))
}

// hangUp ends a refused connection: the write side shut after the close
// frame, it reads (and drops) what the client still sends for a moment,
// so that the client reads the close frame rather than a reset.
func (s *session) hangUp() {
	if tc, ok := s.conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = s.conn.SetReadDeadline(time.Now().Add(closeLinger))
		_, _ = io.Copy(io.Discard, s.conn)
	}
	_ = s.conn.Close()
}

// readLoop reads and handles the client's frames until none is buffered,
// then waits for more in a fresh goroutine: a quiet client costs a parked
// goroutine at the minimum stack and no buffer. Every message read moves
// the idle deadline. When reading ends, so does the session.
func (s *session) readLoop() {
	s.rd.release() // unless bytes are buffered
	s.extendIdle()
	if err := s.rd.wait(); err != nil { // at once if bytes are buffered
		s.finish()
		return
	}
	for {
		data, err := s.rd.next()
		var pe *protocolError
		switch {
		case err == nil:
			s.g.m.framesIn.Inc()
			s.handle(data)
		case errors.Is(err, errTooLarge):
			s.close(CloseTooLarge, "message too large")
			continue // drain (the frame's rest is skipped) until the client closes
		case errors.As(err, &pe):
			// The stream cannot be read on: drop what comes until the
			// client closes or the linger passes.
			s.close(CloseProtocolError, pe.reason)
			<-s.finished
			_, _ = io.Copy(io.Discard, s.conn)
			s.finish()
			return
		default:
			s.finish() // closed, idle, or gone
			return
		}
		if !s.rd.buffered() {
			go s.readLoop()
			return
		}
		s.extendIdle()
	}
}

// extendIdle moves the idle deadline, unless the session is closing
// (closeNow set a short one).
func (s *session) extendIdle() {
	select {
	case <-s.done:
	default:
		_ = s.conn.SetReadDeadline(time.Now().Add(s.g.cfg.IdleTimeout))
	}
}

// finish ends the session once reading has: the requests in flight
// answer, the close frame goes, then the connection.
func (s *session) finish() {
	s.rd.drop()
	s.requests.Wait()
	s.close(CloseNormal, "")
	<-s.finished
	s.g.hub.remove(s, s.release)
	_ = s.conn.Close()
	s.g.conns.Add(-1)
	s.g.wg.Done()
}

// handle takes one message from the client.
func (s *session) handle(data []byte) {
	select {
	case <-s.done:
		return // closing: drain what the client still sends until it closes too
	default:
	}
	// Every frame counts against the rate, valid or not.
	allowed := s.limiter.Allow()
	req, parseErr := parseFrame(data)
	if !allowed {
		s.strikes++
		if s.strikes >= s.g.cfg.MaxStrikes {
			s.close(ClosePolicy, "flooding")
			return // drain until the client answers the close
		}
		s.send(errorReply(req.ID, schema.CodeRateLimited, "slow down"))
		return
	}
	s.strikes = 0
	if parseErr != nil {
		s.send(errorReply(req.ID, parseErr.code, parseErr.msg))
		return
	}
	s.dispatch(req)
}

func (s *session) dispatch(req *request) {
	switch req.Op {
	case "ping":
		s.send(&reply{Op: "pong", ID: req.ID})
	case "send", "edit", "revoke", "create", "members", "read", "history", "sync":
		if s.draining.Load() {
			s.send(errorReply(req.ID, schema.CodeUnavailable, "server draining: reconnect and retry"))
			return
		}
		select {
		case s.inFlight <- struct{}{}:
		default:
			s.send(errorReply(req.ID, schema.CodeRateLimited, "too many requests in flight"))
			return
		}
		read := req.Op == "history" || req.Op == "sync"
		if !read {
			// A command holds no goroutine: its outcome answers it.
			s.requests.Add(1)
			s.command(req)
			return
		}
		select {
		case s.histories <- struct{}{}:
		default:
			<-s.inFlight
			s.send(errorReply(req.ID, schema.CodeRateLimited, "too many history and sync requests in flight"))
			return
		}
		s.requests.Add(1)
		go func() {
			defer s.requests.Done()
			defer func() { <-s.inFlight }()
			defer func() { <-s.histories }()
			ctx, cancel := context.WithTimeout(context.Background(), s.g.cmd.cfg.ReplyTimeout+5*time.Second)
			defer cancel()
			if req.Op == "history" {
				s.history(ctx, req)
			} else {
				s.sync(ctx, req)
			}
		}()
	case "auth":
		s.send(errorReply(req.ID, schema.CodeBadRequest, "already authenticated"))
	case "typing":
		if !schema.ValidConvID(req.Conv) {
			s.send(errorReply(req.ID, schema.CodeBadRequest, "missing or invalid conv"))
			return
		}
		// Ephemeral and unanswered: fanout pushes it to the other members'
		// online devices if the sender is a member.
		s.g.cmd.typing(req.Conv, s.user)
	case "":
		s.send(errorReply(req.ID, schema.CodeBadRequest, "missing op"))
	default:
		s.send(errorReply(req.ID, schema.CodeBadRequest, "unknown op"))
	}
}

// command turns a request, holding a place in s.inFlight and s.requests,
// into one or two commands, submits them one after the other, and answers
// it; then it gives the places back. It returns at once: the commands'
// outcomes carry it on.
func (s *session) command(req *request) {
	r := &commandRequest{s: s, req: req, start: time.Now()}
	cmds, rerr := commandsFor(s.user, req)
	if rerr != nil {
		s.send(errorReply(req.ID, rerr.code, rerr.msg))
		r.end(rerr.code)
		return
	}
	r.cmds = cmds
	r.submit()
}

// commandRequest is a request whose commands are on their way: what their
// outcomes need to carry it on, in one allocation besides the callback
// each Submit takes (every message makes one; closures made four).
type commandRequest struct {
	s     *session
	req   *request
	cmds  []*parleyv1.Command
	next  int // the command submitted last
	start time.Time
}

func (r *commandRequest) submit() { r.s.g.cmd.Submit(r.cmds[r.next], r.outcome) }

// outcome carries the request on with its current command's outcome.
func (r *commandRequest) outcome(o *parleyv1.Outcome, err error) {
	switch {
	case err != nil:
		r.end(r.s.sendErr(r.req.ID, err))
	case r.next+1 < len(r.cmds):
		r.next++
		r.submit()
	default:
		r.s.reply(r.req, r.cmds[0], o)
		r.end("ok")
	}
}

// end counts the request, answered with status, and gives its places back.
func (r *commandRequest) end(status string) {
	s := r.s
	if r.req.Op == "send" && status == "ok" {
		s.g.m.sentOK.Inc()
	} else {
		s.g.m.commands.WithLabelValues(r.req.Op, status).Inc()
	}
	if r.req.Op == "send" {
		s.g.m.sendAck.Observe(time.Since(r.start).Seconds())
	}
	<-s.inFlight
	s.requests.Done()
}

// reply answers a request whose commands all succeeded; o is the last
// one's outcome.
func (s *session) reply(req *request, cmd *parleyv1.Command, o *parleyv1.Outcome) {
	switch req.Op {
	case "create":
		s.send(&reply{Op: "created", ID: req.ID, Conv: cmd.Conv})
	case "read", "members":
		s.send(&reply{Op: "ok", ID: req.ID})
	default:
		s.sendAck(req.ID, cmd.Conv, cmd.Cmid, o.Event.GetMsgId(), o.Event.GetSeq())
	}
}

// sendAck queues the ack of a message (appendAck).
func (s *session) sendAck(id, conv, cmid, msgID string, seq int64) {
	n := len(`{"op":"ack","id":"","conv":"","cmid":"","msg_id":"","seq":}`) + len(id) + len(conv) + len(cmid) + len(msgID) + 20
	s.enqueue(appendAck(make([]byte, 0, n), id, conv, cmid, msgID, seq))
}

// sendErr answers a command that failed with err, and returns the error
// code it answered.
func (s *session) sendErr(id string, err error) string {
	var rej *RejectedError
	switch {
	case errors.As(err, &rej):
		s.send(errorReply(id, rej.Code(), rej.Message))
		return rej.Code()
	case errors.Is(err, ErrUnavailable):
		s.send(errorReply(id, schema.CodeUnavailable, "try again later with the same cmid"))
		return schema.CodeUnavailable
	default:
		s.g.log.Warn("request failed", "user", s.user, "err", err)
		s.send(errorReply(id, schema.CodeInternal, "internal error"))
		return schema.CodeInternal
	}
}

// history serves a page of a conversation the user is, or was, a member
// of; a removed member sees nothing after their removal.
func (s *session) history(ctx context.Context, req *request) {
	r, rerr := historyRange(req)
	if rerr != nil {
		s.send(errorReply(req.ID, rerr.code, rerr.msg))
		return
	}
	m, err := s.g.store.Membership(ctx, req.Conv, s.user)
	if errors.Is(err, store.ErrNotFound) {
		s.send(errorReply(req.ID, schema.CodeForbidden, "not a member"))
		return
	}
	if err != nil {
		s.send(errorReply(req.ID, schema.CodeUnavailable, "the store is unavailable"))
		return
	}
	if m.RemovedSeq > 0 && req.After != nil && *req.After >= m.RemovedSeq {
		s.send(errorReply(req.ID, schema.CodeForbidden, fmt.Sprintf("removed from the conversation at seq %d: nothing after it is readable", m.RemovedSeq)))
		return
	}
	if m.RemovedSeq > 0 && r.Before > m.RemovedSeq+1 {
		r.Before = m.RemovedSeq + 1 // a forward page is cut below
	}
	evs, more, err := s.g.store.Events(ctx, req.Conv, r)
	if err != nil {
		s.send(errorReply(req.ID, schema.CodeUnavailable, "the store is unavailable"))
		return
	}
	if m.RemovedSeq > 0 && r.Before == 0 {
		// Nothing after the removal: a forward page ends there.
		for i, ev := range evs {
			if ev.Seq > m.RemovedSeq {
				evs = evs[:i]
				break
			}
		}
		if len(evs) > 0 && evs[len(evs)-1].Seq >= m.RemovedSeq {
			more = false
		}
	}
	evs, cut := trimPage(evs, r.Before > 0)
	s.enqueue(historyFrame(req.ID, req.Conv, evs, more || cut))
}

// historyFrame is history_ok: {"op":"history_ok","id","conv","events",
// "more"}, events and more always present.
func historyFrame(id, conv string, evs []*parleyv1.Event, more bool) []byte {
	size := 64
	for _, ev := range evs {
		size += len(ev.Body) + 256
	}
	b := append(make([]byte, 0, size), `{"op":"history_ok"`...)
	if id != "" {
		b = schema.AppendJSONString(append(b, `,"id":`...), id)
	}
	b = schema.AppendJSONString(append(b, `,"conv":`...), conv)
	b = append(b, `,"events":[`...)
	for i, ev := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = schema.AppendEventJSON(b, ev)
	}
	b = strconv.AppendBool(append(b, `],"more":`...), more)
	return append(b, '}')
}

// trimPage cuts a page of events to about maxHistoryBytes (at least one
// event), on the side it pages towards (the oldest events of a backward
// page), so that paging on from its edge skips nothing; cut reports whether
// it dropped any.
func trimPage(evs []*parleyv1.Event, backward bool) (kept []*parleyv1.Event, cut bool) {
	keep, size := 0, 0
	for keep < len(evs) {
		ev := evs[keep]
		if backward {
			ev = evs[len(evs)-1-keep]
		}
		size += len(ev.Body) + 256
		if keep > 0 && size > maxHistoryBytes {
			cut = true
			break
		}
		keep++
	}
	if backward {
		return evs[len(evs)-keep:], cut
	}
	return evs[:keep], cut
}

func (s *session) send(r *reply) { s.sendValue(r) }

// sendValue queues a frame (enqueue).
func (s *session) sendValue(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.g.log.Error("encode frame", "err", err)
		return
	}
	s.enqueue(b)
}

// enqueue queues a frame for the writer; a client that does not keep up
// is closed as a slow consumer (4003, see enqueueHeld).
func (s *session) enqueue(b []byte) {
	if s.enqueueHeld(b) {
		go s.writeLoop()
	}
}

// enqueueHeld queues frames like enqueue but does not start the writer: it
// reports whether the caller must start it (go s.writeLoop()), which it
// does once it has queued everything it has for the session, so that the
// frames go out in one write. Until then no other writer starts.
//
// A client is a slow consumer, closed with 4003, when its queue holds more
// than maxQueueBytes, or when it holds QueueFrames frames and the writer
// has not taken from it for a quarter of WriteTimeout: the writer is stuck
// in a write the client does not read. A burst of more frames than
// QueueFrames to a client that reads is not a slow consumer: the frames
// wait while the writer works through them. The rules are checked once per
// call, before its frames (up to a push chunk) are added.
func (s *session) enqueueHeld(frames ...[]byte) (start bool) {
	size := int64(0)
	for _, b := range frames {
		size += int64(len(b))
	}
	if s.queued.Add(size) > maxQueueBytes {
		s.queued.Add(-size)
		s.close(CloseSlowConsumer, "outbound queue full")
		return false
	}
	s.qmu.Lock()
	closing, slow := false, false
	select {
	case <-s.done: // closing: the writer takes nothing more
		closing = true
	default:
		slow = len(s.queue) >= s.g.cfg.QueueFrames && s.stalledLocked()
	}
	if !closing && !slow {
		if s.queue == nil {
			s.queue = spareQueue()
		}
		s.queue = append(s.queue, frames...)
		start = s.claimWriterLocked()
	}
	s.qmu.Unlock()
	if closing || slow {
		s.queued.Add(-size)
	}
	if slow {
		s.close(CloseSlowConsumer, "outbound queue full")
	}
	return start
}

// stalledLocked reports whether the writer has not taken the queue for a
// quarter of WriteTimeout. Before the session starts (auth_ok goes first)
// nothing is taken, and nothing is the client's fault: only the byte bound
// applies. qmu is held.
func (s *session) stalledLocked() bool {
	return s.writing && time.Now().UnixNano()-s.takenAt > int64(s.g.cfg.WriteTimeout/4)
}

// kickLocked starts the writer if it may run and does not; qmu is held.
func (s *session) kickLocked() {
	if s.claimWriterLocked() {
		go s.writeLoop()
	}
}

// claimWriterLocked reports whether the writer may run and does not, and
// if so marks it running: the caller must then start it. qmu is held.
func (s *session) claimWriterLocked() bool {
	if s.started && !s.writing {
		s.writing = true
		s.takenAt = time.Now().UnixNano()
		return true
	}
	return false
}

// take moves every queued frame into batch (emptied first) and returns it.
func (s *session) take(batch [][]byte) [][]byte {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	batch, _ = s.takeLocked(batch)
	return batch
}

// takeLocked returns the queue's array with the queued frames, and the
// queue goes on in batch's array, emptied. When nothing was queued it
// returns batch's array, and the session keeps none (an idle session holds
// no array): spare is the array the session had, emptied, for the next
// session that needs one (spareQueue). qmu is held.
func (s *session) takeLocked(batch [][]byte) (taken, spare [][]byte) {
	taken, s.queue = s.queue, batch[:0]
	if len(taken) == 0 {
		taken, spare, s.queue = s.queue, taken, nil
	}
	return taken, spare
}

// spareQueue returns an emptied queue array a writer left in the pool, or
// nil: a busy node's sessions go from idle to queueing every push batch,
// and each would otherwise allocate an array to queue in.
func spareQueue() [][]byte {
	w := writeBuffers.Get().(*writerBuffers)
	q := w.spare
	w.spare = nil
	writeBuffers.Put(w)
	return q
}

// writeLoop writes the queued frames, every frame queued by then in one
// write, until there is nothing more to write; enqueue starts it again. When
// the session closes it writes what is still queued (unless the client is
// too slow to take it or a write failed) and the close frame, and never
// ends again. Only one runs at a time (kickLocked), so frames keep their
// order.
func (s *session) writeLoop() {
	w := writeBuffers.Get().(*writerBuffers)
	defer w.put()
	for {
		s.qmu.Lock()
		var spare [][]byte
		w.batch, spare = s.takeLocked(w.batch)
		if w.spare == nil {
			w.spare = spare
		}
		s.takenAt = time.Now().UnixNano()
		pong := s.pong
		s.pong = nil
		closing := false
		select {
		case <-s.done:
			closing = true
		default:
		}
		if !closing && len(w.batch) == 0 && pong == nil {
			s.writing = false
			s.qmu.Unlock()
			return
		}
		s.qmu.Unlock()
		if closing {
			// A slow consumer's backlog is dropped, and after a failed
			// write the stream may end in half a frame: neither gets more.
			if s.closeCode != CloseSlowConsumer && s.closeCode != closeAbnormal && len(w.batch) > 0 {
				w.write(s, nil)
			}
			s.closeNow(s.closeCode, s.closeWhy)
			close(s.finished)
			return // writing stays true: no writer starts again
		}
		if !w.write(s, pong) {
			s.close(closeAbnormal, "write failed")
		}
	}
}

// extendWriteDeadline gives the next write at least WriteTimeout. The
// deadline moves on only once less than that is left, by a quarter more
// (so a write has 1 to 1.25 WriteTimeout): setting it for every write was
// 3.5% of the server in the group benchmark. The check reads the monotonic
// clock, as the deadline itself does, so a step of the wall clock cannot
// leave the deadline behind.
func (s *session) extendWriteDeadline() {
	now := time.Now()
	mono, timeout := monoNow(now), s.g.cfg.WriteTimeout
	if s.writeDeadline-mono >= timeout {
		return
	}
	s.writeDeadline = mono + timeout + timeout/4
	_ = s.conn.SetWriteDeadline(now.Add(timeout + timeout/4))
}

// monoStart is the origin of monoNow.
var monoStart = time.Now()

// monoNow is now (from time.Now) on the monotonic clock, since monoStart.
func monoNow(now time.Time) time.Duration { return now.Sub(monoStart) }

// writerBuffers are a writer's scratch slices, pooled: a writer runs only
// while there is something to write, and an idle session keeps none.
type writerBuffers struct {
	hdrs  []byte      // the frames' headers
	iov   net.Buffers // the write's buffers
	out   net.Buffers // what of iov is still to write (WriteTo consumes it)
	batch [][]byte    // the frames taken from the queue
	spare [][]byte    // an emptied queue array, for spareQueue
}

// write sends a pong (if any) and the batch to s's connection in one
// writev, and empties the batch.
func (w *writerBuffers) write(s *session, pong []byte) bool {
	// Headers are at most 10 bytes: reserve them all first, so that
	// appending never moves the slices taken below.
	if need := 10 * (len(w.batch) + 1); cap(w.hdrs) < need {
		w.hdrs = make([]byte, 0, need)
	}
	hdrs, iov := w.hdrs[:0], w.iov[:0]
	frame := func(op byte, p []byte) {
		start := len(hdrs)
		hdrs = appendFrameHeader(hdrs, op, len(p))
		iov = append(iov, hdrs[start:len(hdrs):len(hdrs)], p)
	}
	if pong != nil {
		frame(opPong, pong)
	}
	n := 0
	for _, b := range w.batch {
		frame(opText, b)
		n += len(b)
	}
	w.hdrs, w.iov, w.out = hdrs, iov, iov
	s.g.m.framesOut.Add(float64(len(w.batch)))
	s.extendWriteDeadline()
	_, err := w.out.WriteTo(s.conn) // sets what it wrote to nil
	s.queued.Add(-int64(n))
	clear(w.batch)
	w.batch = w.batch[:0]
	return err == nil
}

var writeBuffers = sync.Pool{New: func() any { return new(writerBuffers) }}

// maxPooledFrames bounds the batch a pooled writerBuffers keeps room for:
// a burst's arrays are left to the collector.
const maxPooledFrames = 1024

// put gives w back to the pool, emptied, unless a burst made it large.
func (w *writerBuffers) put() {
	if cap(w.spare) > maxPooledFrames {
		w.spare = nil
	}
	if cap(w.batch) > maxPooledFrames || cap(w.iov) > 2*(maxPooledFrames+1) || cap(w.hdrs) > 10*(maxPooledFrames+1) {
		return
	}
	clear(w.batch[:cap(w.batch)])
	clear(w.spare[:cap(w.spare)])
	clear(w.iov[:cap(w.iov)])
	w.hdrs, w.iov, w.out, w.batch, w.spare = w.hdrs[:0], w.iov[:0], nil, w.batch[:0], w.spare[:0]
	writeBuffers.Put(w)
}

// close ends the session with code, once: the writer sends what is queued
// and the close frame, and the read loop drains until the client closes.
func (s *session) close(code int, reason string) {
	s.closeOnce.Do(func() {
		s.closeCode, s.closeWhy = code, reason
		s.g.countClose(code)
		close(s.done)
		s.qmu.Lock()
		s.kickLocked()
		s.qmu.Unlock()
	})
}

// closeNow sends a close frame, then shuts the connection's write side and
// gives the client a moment to answer, so that it reads the close frame
// rather than a reset.
func (s *session) closeNow(code int, reason string) {
	if code != closeAbnormal {
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = s.conn.Write(closeFrame(code, reason))
	}
	if tc, ok := s.conn.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = s.conn.SetReadDeadline(time.Now().Add(closeLinger))
		// Whatever the read loop does meanwhile, the connection ends.
		time.AfterFunc(closeLinger, func() { _ = s.conn.Close() })
		return
	}
	_ = s.conn.Close()
}

// closeLinger is how long a closing connection waits for the client's
// close frame.
const closeLinger = 2 * time.Second
