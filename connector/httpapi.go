package connector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/schema"
	"github.com/parley-im/parley/store"
)

// The server-to-server HTTP API (PROTOCOL.md §3) on the public listener,
// beside /v1/ws. schema/README.md documents what PROTOCOL.md leaves open.

const (
	// maxRequestBody is the largest request body the public listener
	// reads; a larger one is answered 413 too_large.
	maxRequestBody = 1 << 20
	// defaultAPIMaxInFlight bounds the API requests one node serves at
	// once; beyond it they get 429 rate_limited.
	defaultAPIMaxInFlight = 1024
	// defaultEventsLimit is the events page size without limit=.
	defaultEventsLimit = 100
	// defaultTokenTTL is a token's lifetime without ttl_s.
	defaultTokenTTL = 24 * time.Hour
	// readyCheckTimeout bounds each check of /readyz.
	readyCheckTimeout = 2 * time.Second
)

// httpAPI holds the API's state: the key's hash (compared in constant time,
// whatever the presented key's length) and the in-flight bound.
type httpAPI struct {
	hasKey bool
	key    [sha256.Size]byte
	slots  chan struct{}
}

func newHTTPAPI(cfg GatewayConfig) (*httpAPI, error) {
	a := &httpAPI{slots: make(chan struct{}, cfg.APIMaxInFlight)}
	if len(cfg.APIKey) > 0 {
		if len(cfg.APIKey) < 16 {
			return nil, errors.New("connector: the API key must be at least 16 bytes")
		}
		a.hasKey, a.key = true, sha256.Sum256(cfg.APIKey)
	}
	return a, nil
}

// authorized reports whether the request carries "Authorization: Bearer
// <the API key>".
func (a *httpAPI) authorized(ctx *fasthttp.RequestCtx) bool {
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	const scheme = "bearer "
	if len(h) <= len(scheme) || !bytes.EqualFold(h[:len(scheme)], []byte(scheme)) {
		return false
	}
	got := sha256.Sum256(bytes.TrimSpace(h[len(scheme):]))
	return subtle.ConstantTimeCompare(got[:], a.key[:]) == 1
}

// apiStatus is the HTTP status of each error code.
var apiStatus = map[string]int{
	schema.CodeBadRequest:   fasthttp.StatusBadRequest,
	schema.CodeUnauthorized: fasthttp.StatusUnauthorized,
	schema.CodeForbidden:    fasthttp.StatusForbidden,
	schema.CodeNotFound:     fasthttp.StatusNotFound,
	schema.CodeTooLarge:     fasthttp.StatusRequestEntityTooLarge,
	schema.CodeRateLimited:  fasthttp.StatusTooManyRequests,
	schema.CodeUnavailable:  fasthttp.StatusServiceUnavailable,
	schema.CodeInternal:     fasthttp.StatusInternalServerError,
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		b.Reset()
		status = fasthttp.StatusInternalServerError
		b.WriteString(`{"code":"internal","message":"encoding the answer failed"}` + "\n")
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b.Bytes())
}

// apiError answers code's status with {"code","message"}.
func apiError(ctx *fasthttp.RequestCtx, code, msg string) {
	status, ok := apiStatus[code]
	if !ok {
		status = fasthttp.StatusInternalServerError
	}
	writeJSON(ctx, status, apiErrorBody{Code: code, Message: msg})
}

// requestError answers a request the server could not read (fasthttp's
// ErrorHandler): too large, a header too big, too slow, or malformed.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		apiError(ctx, schema.CodeTooLarge, fmt.Sprintf("the request body is over %d bytes", maxRequestBody))
	case errors.As(err, &small):
		writeJSON(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, apiErrorBody{schema.CodeTooLarge, "the request header is too large"})
	case errors.As(err, &ne) && ne.Timeout():
		writeJSON(ctx, fasthttp.StatusRequestTimeout, apiErrorBody{schema.CodeBadRequest, "the request was not read in time"})
	default:
		apiError(ctx, schema.CodeBadRequest, "malformed HTTP request")
	}
}

// handleAPI serves /v1/* (except /v1/ws): the key first, then the route.
func (g *Gateway) handleAPI(ctx *fasthttp.RequestCtx) {
	if !g.api.hasKey {
		apiError(ctx, schema.CodeUnavailable, "no API key configured")
		return
	}
	if !g.api.authorized(ctx) {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="parley"`)
		apiError(ctx, schema.CodeUnauthorized, "missing or wrong API key (Authorization: Bearer <key>)")
		return
	}
	if g.isDraining() {
		ctx.SetConnectionClose()
		apiError(ctx, schema.CodeUnavailable, "server draining: retry on another node")
		return
	}
	select {
	case g.api.slots <- struct{}{}:
		defer func() { <-g.api.slots }()
	default:
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		apiError(ctx, schema.CodeRateLimited, "too many API requests in flight: retry later")
		return
	}
	g.routeAPI(ctx)
}

// routeAPI dispatches by path and method.
func (g *Gateway) routeAPI(ctx *fasthttp.RequestCtx) {
	route, want, seg := parseAPIPath(string(ctx.Path()))
	var h func(*fasthttp.RequestCtx, []string)
	switch route {
	case routeTokens:
		h = g.apiToken
	case routeCreate:
		h = g.apiCreate
	case routeMembers:
		h = g.apiMembers
	case routeSend:
		h = g.apiSend
	case routeEvents:
		h = g.apiEvents
	case routeUserConversations:
		h = g.apiUserConversations
	}
	switch {
	case h == nil:
		apiError(ctx, schema.CodeNotFound, "no such endpoint")
	case string(ctx.Method()) != want:
		ctx.Response.Header.Set(fasthttp.HeaderAllow, want)
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, apiErrorBody{schema.CodeBadRequest, want + " only"})
	default:
		h(ctx, seg)
	}
}

// refuse answers an input error.
func refuse(ctx *fasthttp.RequestCtx, e *inputError) { apiError(ctx, e.code, e.msg) }

// pathConv is the conversation id in /v1/conversations/{conv}/…, or "" after
// answering 400.
func pathConv(ctx *fasthttp.RequestCtx, seg []string) string {
	if !schema.ValidConvID(seg[1]) {
		apiError(ctx, schema.CodeBadRequest, "invalid conversation id")
		return ""
	}
	return seg[1]
}

// apiContext bounds one API call like a WebSocket request: the reply
// timeout, and some time for the store.
func (g *Gateway) apiContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.cmd.cfg.ReplyTimeout+5*time.Second)
}

// commandErr answers an error of Commander.Do.
func (g *Gateway) commandErr(ctx *fasthttp.RequestCtx, err error) {
	var rej *RejectedError
	switch {
	case errors.As(err, &rej):
		apiError(ctx, rej.Code(), rej.Message)
	case errors.Is(err, ErrUnavailable):
		apiError(ctx, schema.CodeUnavailable, "the log is unavailable or did not answer in time: retry later (with the same cmid)")
	default:
		g.log.Warn("API command failed", "path", string(ctx.Path()), "err", err)
		apiError(ctx, schema.CodeInternal, "internal error")
	}
}

// POST /v1/tokens {"user","ttl_s"} → {"token"}.
func (g *Gateway) apiToken(ctx *fasthttp.RequestCtx, _ []string) {
	user, ttl, e := parseTokenRequest(ctx.PostBody())
	if e != nil {
		refuse(ctx, e)
		return
	}
	tok, err := auth.Sign(g.cfg.TokenSecret, user, ttl, time.Now())
	if err != nil {
		g.log.Warn("API token failed", "err", err)
		apiError(ctx, schema.CodeInternal, "internal error")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"token": tok})
}

// POST /v1/conversations {"kind","members","title","as","conv","cmid"} →
// {"conv"}. The rules of the WebSocket create; members may name "as".
func (g *Gateway) apiCreate(ctx *fasthttp.RequestCtx, _ []string) {
	cmd, e := parseCreateRequest(ctx.PostBody())
	if e != nil {
		refuse(ctx, e)
		return
	}
	cctx, cancel := g.apiContext()
	defer cancel()
	if _, err := g.cmd.Do(cctx, cmd); err != nil {
		g.commandErr(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"conv": cmd.Conv})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// POST /v1/conversations/{conv}/members {"add","remove","as"} → {}: one
// command per change, adds first.
func (g *Gateway) apiMembers(ctx *fasthttp.RequestCtx, seg []string) {
	conv := pathConv(ctx, seg)
	if conv == "" {
		return
	}
	cmds, e := parseMembersRequest(conv, ctx.PostBody())
	if e != nil {
		refuse(ctx, e)
		return
	}
	cctx, cancel := g.apiContext()
	defer cancel()
	for _, cmd := range cmds {
		if _, err := g.cmd.Do(cctx, cmd); err != nil {
			g.commandErr(ctx, err)
			return
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, struct{}{})
}

// POST /v1/conversations/{conv}/messages {"from","cmid","kind","body"} →
// {"msg_id","seq"}; a retry with the same cmid gets the original's.
func (g *Gateway) apiSend(ctx *fasthttp.RequestCtx, seg []string) {
	conv := pathConv(ctx, seg)
	if conv == "" {
		return
	}
	cmd, e := parseSendRequest(conv, ctx.PostBody())
	if e != nil {
		refuse(ctx, e)
		return
	}
	cctx, cancel := g.apiContext()
	defer cancel()
	o, err := g.cmd.Do(cctx, cmd)
	if err != nil {
		g.commandErr(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		MsgID string `json:"msg_id"`
		Seq   int64  `json:"seq"`
	}{o.GetEvent().GetMsgId(), o.GetEvent().GetSeq()})
}

// eventsPage is the answer of the events endpoint: both fields always.
type eventsPage struct {
	Events []schema.EventJSON `json:"events"`
	More   bool               `json:"more"`
}

// GET /v1/conversations/{conv}/events?after=N|before=N&limit=M →
// {"events","more"}. The backend's view: no membership check.
func (g *Gateway) apiEvents(ctx *fasthttp.RequestCtx, seg []string) {
	conv := pathConv(ctx, seg)
	if conv == "" {
		return
	}
	r, e := parseEventsQuery(ctx.QueryArgs())
	if e != nil {
		refuse(ctx, e)
		return
	}
	sctx, cancel := g.apiContext()
	defer cancel()
	if _, err := g.store.Conversation(sctx, conv); errors.Is(err, store.ErrNotFound) {
		apiError(ctx, schema.CodeNotFound, "no such conversation")
		return
	} else if err != nil {
		apiError(ctx, schema.CodeUnavailable, "the store is unavailable")
		return
	}
	evs, more, err := g.store.Events(sctx, conv, r)
	if err != nil {
		apiError(ctx, schema.CodeUnavailable, "the store is unavailable")
		return
	}
	evs, cut := trimPage(evs, r.Before > 0)
	page := eventsPage{Events: make([]schema.EventJSON, 0, len(evs)), More: more || cut}
	for _, ev := range evs {
		page.Events = append(page.Events, schema.ToJSON(ev))
	}
	writeJSON(ctx, fasthttp.StatusOK, page)
}

// GET /v1/users/{user}/conversations → {"convs"} as in sync_ok.
func (g *Gateway) apiUserConversations(ctx *fasthttp.RequestCtx, seg []string) {
	user := seg[1]
	if !schema.ValidUserID(user) {
		apiError(ctx, schema.CodeBadRequest, "invalid user id")
		return
	}
	sctx, cancel := g.apiContext()
	defer cancel()
	convs, err := g.conversationList(sctx, user)
	if err != nil {
		g.log.Warn("API conversation list failed", "user", user, "err", err)
		apiError(ctx, schema.CodeUnavailable, "the store is unavailable")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Convs []schema.ConvJSON `json:"convs"`
	}{convs})
}

// readyz answers 200 when the log, this node's outcome reader and the store
// (if it can be pinged) answer, and 503 naming the failing check otherwise
// (or while draining). It needs no key; the errors' text (which may name
// internal addresses) is shown only to a caller presenting the API key.
func (g *Gateway) readyz(ctx *fasthttp.RequestCtx) {
	detail := g.api.hasKey && g.api.authorized(ctx)
	checks := map[string]func(context.Context) error{
		"log": g.cmd.Ping,
		"outcomes": func(context.Context) error {
			select {
			case <-g.cmd.Ready():
				return nil
			default:
				return errors.New("not reading outcomes yet")
			}
		},
	}
	if p, ok := g.store.(interface{ Ping(context.Context) error }); ok {
		checks["store"] = p.Ping
	}
	if g.isDraining() {
		checks["draining"] = func(context.Context) error { return errors.New("the node is shutting down") }
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		results = make(map[string]string, len(checks))
		failed  []string
	)
	for name, check := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(context.Background(), readyCheckTimeout)
			defer cancel()
			err := check(cctx)
			if err == nil && cctx.Err() != nil {
				err = cctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && detail:
				results[name] = err.Error()
				failed = append(failed, name+": "+err.Error())
			case err != nil:
				results[name] = "failed"
				failed = append(failed, name)
			default:
				results[name] = "ok"
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		sort.Strings(failed)
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{
			"code": schema.CodeUnavailable, "message": "not ready: " + strings.Join(failed, "; "), "checks": results})
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"ok": true, "checks": results})
}
