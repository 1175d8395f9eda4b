package connector

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/parley-im/parley/schema"
)

// PushPath is the internal push endpoint; PushSecretHeader carries the
// shared secret (schema/parley/v1/push.proto).
const (
	PushPath         = "/internal/push"
	PushSecretHeader = "X-Parley-Push-Secret"
)

// The push listener reads a request within pushReadTimeout and closes a
// connection idle for pushIdleTimeout (fanout drops its idle connections
// after a minute, before that).
const (
	pushReadTimeout = 10 * time.Second
	pushIdleTimeout = 2 * time.Minute
)

// handlePush delivers a PushBatch to the connections of its users on this
// node, in the batch's order. It answers 200 {"delivered": n} with the
// number of frames handed to connections (a frame to three connections
// counts three; one a closing connection refused counts too), 401 for a
// wrong secret, 400 for a body that is not a PushBatch.
func (g *Gateway) handlePush(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != PushPath {
		ctx.Error(`{"code":"not_found","message":"no such endpoint"}`, fasthttp.StatusNotFound)
		return
	}
	if !ctx.IsPost() {
		ctx.Error(`{"code":"bad_request","message":"POST only"}`, fasthttp.StatusMethodNotAllowed)
		return
	}
	if subtle.ConstantTimeCompare(ctx.Request.Header.Peek(PushSecretHeader), g.cfg.PushSecret) != 1 {
		ctx.Error(`{"code":"unauthorized","message":"wrong push secret"}`, fasthttp.StatusUnauthorized)
		return
	}
	frames, err := pushFrames(ctx.PostBody())
	if err != nil {
		ctx.Error(`{"code":"bad_request","message":"the body is not a PushBatch"}`, fasthttp.StatusBadRequest)
		return
	}
	delivered := 0
	// The frames of up to pushChunk events are queued before the writers
	// of the sessions they go to start, so that a session gets them in one
	// write. The writers start at least that often, so that the first
	// events of a long batch do not wait for its last: another core runs
	// them while this one queues. The handler does not yield to them: on a
	// busy node a yield puts it behind every goroutine ready to run, the
	// sessions reading new messages among them, and fanout's next batch
	// waits for this one's answer, so the deliveries fell ever further
	// behind the sends (dm with 8 to 32 sends in flight).
	var to, start []*session // reused: no allocation per user per push
	startHeld := func() {
		for _, s := range start {
			go s.writeLoop()
		}
		start = start[:0]
	}
	defer startHeld()
	var run [][]byte // reused
	for i := 0; i < len(frames); {
		// A run: the pushes from i on to the same users, within the chunk
		// (a busy conversation's events in a row). Its users' sessions are
		// looked up once, and each session takes its frames in one go.
		j := i + 1
		for j < len(frames) && j%pushChunk != 0 && slices.Equal(frames[j].users, frames[i].users) {
			j++
		}
		run = run[:0]
		for _, f := range frames[i:j] {
			if f.typing {
				g.m.pushedTyping.Inc()
			} else {
				g.m.pushedEvents.Inc()
			}
			run = append(run, f.frame)
		}
		for _, u := range frames[i].users {
			to = g.hub.sessions(u, to[:0])
			for _, s := range to {
				if s.enqueueHeld(run...) {
					start = append(start, s)
				}
				delivered += len(run)
			}
		}
		if i = j; i%pushChunk == 0 {
			startHeld()
		}
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"delivered":` + strconv.Itoa(delivered) + `}`)
}

// pushChunk is how many events of a push batch are queued before the
// writers of the sessions they go to start. A session writes what it was
// given in one writev, and in a busy group a batch holds tens of the
// group's events: 64 takes them in one write where 16 took several
// (group, 1,000 members: 8 % less server CPU a delivery; 256 did no
// better), and queueing them is a few microseconds, so the first events
// of a long batch still go out early.
const pushChunk = 64

// pushFrame is one push of a batch as the client frame its users get.
type pushFrame struct {
	frame  []byte
	users  []string
	typing bool // a typing signal, not an event
}

// pushFrames decodes a PushBatch (push.proto) into the frames to write, in
// the batch's order: {"op":"event", <event>} or {"op":"typing","conv",
// "from"}. A push with neither an event nor a typing signal is left out.
// Every frame is a JSON object, whatever the batch holds (a body that is
// not JSON becomes a JSON string). The error wraps schema.ErrUndecodable.
func pushFrames(body []byte) ([]pushFrame, error) {
	batch, err := schema.DecodePushBatch(body)
	if err != nil {
		return nil, err
	}
	frames := make([]pushFrame, 0, len(batch.Pushes))
	for _, p := range batch.Pushes {
		var frame []byte
		var err error
		switch {
		case p.GetEvent() != nil:
			// {"op":"event", <event fields>}
			frame = append(make([]byte, 0, 256+len(p.Event.Body)), `{"op":"event",`...)
			frame = append(schema.AppendEventFields(frame, p.Event), '}')
		case p.GetTyping() != nil:
			frame, err = json.Marshal(reply{Op: "typing", Conv: p.Typing.Conv, From: p.Typing.From})
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("connector: encode a push: %w", err)
		}
		frames = append(frames, pushFrame{frame: frame, users: p.Users, typing: p.GetEvent() == nil})
	}
	return frames, nil
}
