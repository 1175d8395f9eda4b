package connector

import (
	"crypto/subtle"
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/schema"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// PushPath is the internal push endpoint; PushSecretHeader carries the
// shared secret (schema/parley/v1/push.proto).
const (
	PushPath         = "/internal/push"
	PushSecretHeader = "X-Parley-Push-Secret"
)

// eventPush is the protocol's push frame: {"op":"event", <event fields>}.
type eventPush struct {
	Op string `json:"op"`
	schema.EventJSON
}

// handlePush delivers a PushBatch to the connections of its users on this
// node, in the batch's order. It answers 200 {"delivered": n} with the
// number of connections written to, 401 for a wrong secret, 400 for a body
// that is not a PushBatch.
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
	var batch parleyv1.PushBatch
	if err := proto.Unmarshal(ctx.PostBody(), &batch); err != nil {
		ctx.Error(`{"code":"bad_request","message":"the body is not a PushBatch"}`, fasthttp.StatusBadRequest)
		return
	}
	delivered := 0
	for _, p := range batch.Pushes {
		var frame []byte
		var err error
		switch {
		case p.GetEvent() != nil:
			frame, err = json.Marshal(eventPush{Op: "event", EventJSON: schema.ToJSON(p.Event)})
		case p.GetTyping() != nil:
			frame, err = json.Marshal(reply{Op: "typing", Conv: p.Typing.Conv, From: p.Typing.From})
		default:
			continue
		}
		if err != nil {
			g.log.Error("encode push", "err", err)
			continue
		}
		for _, u := range p.Users {
			for _, s := range g.hub.sessions(u) {
				s.enqueue(frame)
				delivered++
			}
		}
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"delivered":` + strconv.Itoa(delivered) + `}`)
}
