package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parley-im/parley/schema"
)

// retryMode says when a request may be tried again.
type retryMode uint8

const (
	// retryIdempotent: the request is safe to repeat (a cmid, a
	// deterministic id, a cursor that only moves forward, a read):
	// retried on unavailable, rate_limited, no reply and connection loss.
	retryIdempotent retryMode = iota
	// once: tried once.
	once
)

// Send sends a message with a fresh cmid (a KSUID); see SendCMID.
func (c *Client) Send(ctx context.Context, conv, kind string, body any) (Ack, error) {
	return c.SendCMID(ctx, conv, schema.NewID(), kind, body)
}

// SendCMID sends a message with the given client message id. It retries
// with the same cmid until it gets an answer or ctx ends (see the package
// doc), so it yields exactly one message however often it tries; a repeat
// of an earlier cmid yields the original message's id and seq. body is
// encoded with encoding/json (pass a json.RawMessage for raw JSON); kind
// "" means "text". Refusals (forbidden, bad_request, ...) return at once
// as *Error.
func (c *Client) SendCMID(ctx context.Context, conv, cmid, kind string, body any) (Ack, error) {
	if cmid == "" {
		return Ack{}, &Error{Code: CodeBadRequest, Message: "empty cmid"}
	}
	raw, err := encodeBody(body)
	if err != nil {
		return Ack{}, err
	}
	f, err := c.do(ctx, &request{Op: "send", Conv: conv, CMID: cmid, Kind: kind, Body: raw}, retryIdempotent)
	if err != nil {
		return Ack{}, err
	}
	return ack(f), nil
}

// Edit replaces the body of message target with an edit event; cmid ""
// takes a fresh one. Retried like SendCMID.
func (c *Client) Edit(ctx context.Context, conv, cmid string, target int64, body any) (Ack, error) {
	if cmid == "" {
		cmid = schema.NewID()
	}
	raw, err := encodeBody(body)
	if err != nil {
		return Ack{}, err
	}
	f, err := c.do(ctx, &request{Op: "edit", Conv: conv, CMID: cmid, Target: target, Body: raw}, retryIdempotent)
	if err != nil {
		return Ack{}, err
	}
	return ack(f), nil
}

// Revoke withdraws message target; cmid "" takes a fresh one. Retried
// like SendCMID.
func (c *Client) Revoke(ctx context.Context, conv, cmid string, target int64) (Ack, error) {
	if cmid == "" {
		cmid = schema.NewID()
	}
	f, err := c.do(ctx, &request{Op: "revoke", Conv: conv, CMID: cmid, Target: target}, retryIdempotent)
	if err != nil {
		return Ack{}, err
	}
	return ack(f), nil
}

// Create creates a conversation — kind "direct" with exactly one other
// member, or "group" with members and a title — and returns its id. The
// client tracks it from seq 0, so Events starts with its "created" event.
// It is retried like SendCMID: a direct conversation has one id per pair,
// and a group gets its id (a KSUID) and a cmid from the client, so a
// repeat yields the same conversation, never a second one.
func (c *Client) Create(ctx context.Context, kind string, members []string, title string) (string, error) {
	req := &request{Op: "create", Kind: kind, Members: members, Title: title}
	if kind == "group" {
		req.Conv, req.CMID = schema.NewID(), schema.NewID()
	}
	f, err := c.do(ctx, req, retryIdempotent)
	if err != nil {
		return "", err
	}
	return f.Conv, nil
}

// Members adds and removes members of a group. Adding a member or
// removing a non-member changes nothing, so it is retried like SendCMID.
func (c *Client) Members(ctx context.Context, conv string, add, remove []string) error {
	_, err := c.do(ctx, &request{Op: "members", Conv: conv, Add: add, Remove: remove}, retryIdempotent)
	return err
}

// Read moves the user's read cursor of conv forward to seq (never back).
// Retried like SendCMID.
func (c *Client) Read(ctx context.Context, conv string, seq int64) error {
	_, err := c.do(ctx, &request{Op: "read", Conv: conv, Seq: seq}, retryIdempotent)
	return err
}

// History returns up to limit events of conv (0: the server's default,
// 100; at most 1000), ascending by seq: those after seq after, or, when
// before > 0, the last ones before seq before. more reports whether
// further events exist in that direction. It does not touch Events.
// Retried like SendCMID.
func (c *Client) History(ctx context.Context, conv string, after, before int64, limit int) ([]Event, bool, error) {
	req := &request{Op: "history", Conv: conv, Limit: limit}
	if before > 0 {
		req.Before = &before
	} else {
		req.After = &after
	}
	f, err := c.do(ctx, req, retryIdempotent)
	if err != nil {
		return nil, false, err
	}
	for i := range f.Events {
		if f.Events[i].Conv == "" {
			f.Events[i].Conv = conv
		}
	}
	return f.Events, f.More, nil
}

// Typing tells the other members of conv that the user is typing. It does
// not wait for anything: it returns ErrNotConnected while reconnecting and a
// rate_limited *Error when the connection's frame budget is spent.
func (c *Client) Typing(conv string) error {
	if err := c.Err(); err != nil {
		return err
	}
	cn := c.current()
	if cn == nil {
		return ErrNotConnected
	}
	if cn.pace != nil && !cn.pace.Allow() {
		return &Error{Code: CodeRateLimited, Message: "typing signals come faster than the server takes frames"}
	}
	b := encodeRequest(&request{Op: "typing", Conv: conv})
	if err := cn.write(b); err != nil {
		return ErrNotConnected
	}
	return nil
}

// Ping asks the server for a pong (tried once; it waits for a connection
// while reconnecting).
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, &request{Op: "ping"}, once)
	return err
}

// Track makes Events deliver conv's events after lastSeq, fetching those
// the server already has now; for a client that persisted its position.
// A conversation already tracked keeps its position (nothing is delivered
// twice). Track queues behind the pushes already received, so to apply a
// position before any push can arrive, pass it in Config.Tracked.
func (c *Client) Track(conv string, lastSeq int64) {
	c.q.add(item{kind: itemTrack, conv: conv, seq: max(lastSeq, 0)})
}

// Sync returns every conversation the user is in, with its last seq, the
// user's read cursor and unread count (tried like SendCMID).
func (c *Client) Sync(ctx context.Context) ([]Conversation, error) {
	f, err := c.do(ctx, &request{Op: "sync"}, retryIdempotent)
	if err != nil {
		return nil, err
	}
	return f.Convs, nil
}

// CatchUp brings this device up to date: it syncs, tracks every
// conversation of the user (one not tracked yet from the user's read
// cursor: what they have not read; older events are a History call away),
// and returns once Events has delivered each up to the last seq sync
// reported (the application must be reading Events meanwhile). A
// conversation the server refuses to serve (the user was removed meanwhile)
// stops being tracked. It returns the conversations as sync reported them.
func (c *Client) CatchUp(ctx context.Context) ([]Conversation, error) {
	convs, err := c.Sync(ctx)
	if err != nil {
		return nil, err
	}
	upTo := make(map[string]int64, len(convs))
	from := make(map[string]int64, len(convs))
	for _, cv := range convs {
		upTo[cv.Conv], from[cv.Conv] = cv.LastSeq, cv.ReadSeq
	}
	done := make(chan bool, 1)
	c.q.add(item{kind: itemUpTo, upTo: upTo, from: from, done: done})
	stopped := func() error {
		if err := c.Err(); err != nil {
			return err
		}
		return ErrClosed
	}
	select {
	case ok := <-done:
		if !ok {
			return nil, stopped()
		}
		return convs, nil
	case <-c.ctx.Done():
		return nil, stopped()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func ack(f *frame) Ack { return Ack{Conv: f.Conv, CMID: f.CMID, MsgID: f.MsgID, Seq: f.Seq} }

func encodeBody(body any) (json.RawMessage, error) {
	if body == nil {
		return nil, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("parley: encode body: %w", err)
	}
	return b, nil
}

// do runs a request, retrying as mode allows, with backoff, until it gets
// an answer or ctx ends.
func (c *Client) do(ctx context.Context, req *request, mode retryMode) (*frame, error) {
	for n := 0; ; n++ {
		f, sent, err := c.attempt(ctx, req)
		if err == nil {
			return f, nil
		}
		if !retryable(err, sent, mode) || ctx.Err() != nil || c.ctx.Err() != nil {
			return nil, err
		}
		c.st.retries.Add(1)
		c.log.Debug("retrying", "op", req.Op, "conv", req.Conv, "cmid", req.CMID, "err", err)
		// After a connection loss the next attempt waits for the reconnect
		// itself; the backoff spaces attempts against a struggling server.
		if !sleepCtx(ctx, c.backoff(n)) {
			return nil, fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
	}
}

func retryable(err error, sent bool, mode retryMode) bool {
	if mode == once {
		return false
	}
	return (!sent && errors.Is(err, errNotSent)) || IsCode(err, CodeRateLimited) ||
		IsCode(err, CodeUnavailable) || errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrNoReply)
}

// attempt sends req once on the current connection (waiting for one) and
// waits for its reply. sent reports whether the request was written.
func (c *Client) attempt(ctx context.Context, req *request) (f *frame, sent bool, err error) {
	cn, err := c.waitConn(ctx)
	if err != nil {
		return nil, false, err
	}
	req.ID = c.newID()
	b := encodeRequest(req)
	if len(b) > c.cfg.MaxFrameBytes {
		return nil, false, &Error{Code: CodeTooLarge, Message: fmt.Sprintf("the request is %d bytes, over the limit of %d", len(b), c.cfg.MaxFrameBytes)}
	}
	if cn.pace != nil {
		if err := cn.pace.Wait(ctx); err != nil {
			return nil, false, fmt.Errorf("%w: %w", errNotSent, err)
		}
	}
	ch := make(chan *frame, 1)
	cn.register(req.ID, ch)
	if err := cn.write(b); err != nil {
		cn.unregister(req.ID)
		return nil, false, err
	}
	c.st.requests.Add(1)
	// One frame comes on ch (see conn.pending): the reply, or word that
	// none will come.
	var reply *frame
	if done := ctx.Done(); done == nil {
		reply = <-ch
	} else {
		select {
		case reply = <-ch:
		case <-done:
			cn.unregister(req.ID)
			return nil, true, ctx.Err()
		}
	}
	switch reply {
	case lostFrame:
		if c.ctx.Err() != nil {
			return nil, true, c.Err()
		}
		return nil, true, ErrConnectionLost
	case timedOutFrame:
		return nil, true, ErrNoReply
	}
	return result(reply)
}

func result(f *frame) (*frame, bool, error) {
	if f.Op == "error" {
		return nil, true, &Error{Code: f.Code, Message: f.Message}
	}
	return f, true, nil
}
