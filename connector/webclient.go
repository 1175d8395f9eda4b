package connector

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/parley-im/parley/connector/web"
	"github.com/parley-im/parley/schema"
)

// webCSP confines the web client's page to its own script and stylesheet,
// and its connections to this server (the WebSocket included).
const webCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveWeb answers GET and HEAD of the web client's files (package web) at
// "/", "/app.css" and "/app.js". Each carries an ETag from its content and
// "Cache-Control: no-cache", so a browser revalidates and a request with a
// matching If-None-Match gets 304 without a body. Other methods get 405.
func (g *Gateway) serveWeb(ctx *fasthttp.RequestCtx) {
	a, ok := web.Lookup(string(ctx.Path()))
	if !ok {
		apiError(ctx, schema.CodeNotFound, "no such endpoint")
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, apiErrorBody{schema.CodeBadRequest, "GET only"})
		return
	}
	h := &ctx.Response.Header
	h.Set(fasthttp.HeaderETag, a.ETag)
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	h.Set(fasthttp.HeaderXContentTypeOptions, "nosniff")
	if string(ctx.Path()) == "/" {
		h.Set(fasthttp.HeaderContentSecurityPolicy, webCSP)
		h.Set(fasthttp.HeaderXFrameOptions, "DENY")
		h.Set(fasthttp.HeaderReferrerPolicy, "no-referrer")
	}
	if etagMatches(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch), a.ETag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetContentType(a.ContentType)
	ctx.SetBody(a.Body) // fasthttp leaves the body out of a HEAD answer
}

// etagMatches reports whether an If-None-Match header names etag: "*", or
// one of its comma-separated tags, compared weakly (RFC 9110 §13.1.2).
func etagMatches(header []byte, etag string) bool {
	for _, tag := range bytes.Split(header, []byte(",")) {
		tag = bytes.TrimSpace(tag)
		if string(tag) == "*" || string(bytes.TrimPrefix(tag, []byte("W/"))) == etag {
			return true
		}
	}
	return false
}
