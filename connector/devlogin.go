package connector

import (
	"bytes"
	"crypto/subtle"
	"net"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/valyala/fasthttp"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/schema"
)

// devToken serves /dev/token, the development sign-in of `parley dev`: a
// token for any user, without the API key, to whoever has the sign-in code
// parley dev printed (in the web client's address). It exists only with
// GatewayConfig.DevLoginCode (which only the all-in-one node sets); without
// it the path is an unknown endpoint, 404 like any other.
//
//   - GET (or HEAD) answers 200 {"dev_login":true}: the web client asks it
//     to know whether to offer sign-in by name.
//   - POST {"user":"alice","code":"<code>"} (optionally "ttl_s", as POST
//     /v1/tokens) answers 200 {"token":"<jwt>","user":"alice"}; a user that
//     is not an id, or a body that is not a JSON object, gets 400
//     bad_request; a missing or wrong code gets 403 forbidden.
//   - other methods get 405.
//
// The code keeps the sign-in to the person who started parley dev: other
// users and processes of the machine reach the loopback listener too.
//
// Both refuse, with 403 forbidden, a request a browser sends from another
// site's page (an Origin that is neither this host nor an allowed origin),
// and a request whose Host is a DNS name other than localhost: a page whose
// name was rebound to this machine's address must not get tokens either.
func (g *Gateway) devToken(ctx *fasthttp.RequestCtx) {
	if g.cfg.DevLoginCode == "" {
		apiError(ctx, schema.CodeNotFound, "no such endpoint")
		return
	}
	if msg := g.devLoginRefusal(ctx); msg != "" {
		apiError(ctx, schema.CodeForbidden, msg)
		return
	}
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	switch {
	case ctx.IsGet() || ctx.IsHead():
		writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"dev_login": true})
	case ctx.IsPost():
		user, ttl, e := parseTokenRequest(ctx.PostBody())
		if e != nil {
			refuse(ctx, e)
			return
		}
		var req struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(ctx.PostBody(), &req) // parsed above: an object
		if subtle.ConstantTimeCompare([]byte(req.Code), []byte(g.cfg.DevLoginCode)) != 1 {
			apiError(ctx, schema.CodeForbidden, "the sign-in code is missing or wrong: open the web client's address as parley dev printed it")
			return
		}
		tok, err := auth.Sign(g.cfg.TokenSecret, user, ttl, time.Now())
		if err != nil {
			g.log.Warn("dev token failed", "err", err)
			apiError(ctx, schema.CodeInternal, "internal error")
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"token": tok, "user": user})
	default:
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD, POST")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, apiErrorBody{schema.CodeBadRequest, "GET or POST only"})
	}
}

// DevLoginCode is the code of the dev sign-in, or "" without one.
func (g *Gateway) DevLoginCode() string { return g.cfg.DevLoginCode }

// devLoginRefusal returns why a dev sign-in request is refused, or "".
func (g *Gateway) devLoginRefusal(ctx *fasthttp.RequestCtx) string {
	host := string(ctx.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) == nil && host != "localhost" && !strings.HasSuffix(host, ".localhost") {
		return "dev sign-in answers only requests addressed to an IP address or localhost: paste a token instead"
	}
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	if len(origin) == 0 {
		return "" // not from a browser page
	}
	for _, o := range g.cfg.AllowedOrigins {
		if string(origin) == o {
			return ""
		}
	}
	if i := bytes.Index(origin, []byte("://")); i >= 0 && bytes.Equal(origin[i+3:], ctx.Host()) {
		return ""
	}
	return "dev sign-in only from this server's own page"
}
