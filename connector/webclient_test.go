package connector_test

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"

	"github.com/parley-im/parley/connector"
)

// TestWebClient: the web client's files are served at "/", "/app.css" and
// "/app.js" with their content types and an ETag that revalidates to 304;
// other methods get 405 and other paths keep the JSON 404, next to the
// endpoints that were there before.
func TestWebClient(t *testing.T) {
	g := newGateway(t, connector.GatewayConfig{})
	base := "http://" + g.addr
	etags := map[string]string{}
	for path, want := range map[string]struct{ ctype, contains string }{
		"/":        {"text/html; charset=utf-8", `<script type="module" src="/app.js">`},
		"/app.css": {"text/css; charset=utf-8", ".conv-item"},
		"/app.js":  {"text/javascript; charset=utf-8", "'/v1/ws'"},
	} {
		st, h, body := httpCall(t, http.MethodGet, base+path, "", "", nil)
		if st != 200 || h.Get("Content-Type") != want.ctype || !bytes.Contains(body, []byte(want.contains)) {
			t.Fatalf("GET %s: %d %q, %d bytes, want 200 %q containing %q", path, st, h.Get("Content-Type"), len(body), want.ctype, want.contains)
		}
		etag := h.Get("ETag")
		if len(etag) < 3 || etag[0] != '"' || h.Get("Cache-Control") != "no-cache" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: ETag %q, Cache-Control %q, X-Content-Type-Options %q", path, etag, h.Get("Cache-Control"), h.Get("X-Content-Type-Options"))
		}
		etags[path] = etag
		for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
			st, h, body := httpCall(t, http.MethodGet, base+path, "", "", map[string]string{"If-None-Match": inm})
			if st != http.StatusNotModified || len(body) != 0 || h.Get("ETag") != etag {
				t.Fatalf("GET %s with If-None-Match %s: %d, %d bytes, ETag %q; want 304, none, %s", path, inm, st, len(body), h.Get("ETag"), etag)
			}
		}
		if st, _, _ := httpCall(t, http.MethodGet, base+path, "", "", map[string]string{"If-None-Match": `"stale"`}); st != 200 {
			t.Fatalf("GET %s with a stale ETag: %d, want 200", path, st)
		}
		st, h, headBody := httpCall(t, http.MethodHead, base+path, "", "", nil)
		if st != 200 || len(headBody) != 0 || h.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Fatalf("HEAD %s: %d, %d bytes, Content-Length %q; want 200, none, %d", path, st, len(headBody), h.Get("Content-Length"), len(body))
		}
		st, h, raw := httpCall(t, http.MethodPost, base+path, "", "x", nil)
		wantJSON(t, "POST "+path, st, h, raw, 405, "bad_request")
		if h.Get("Allow") != "GET, HEAD" {
			t.Fatalf("POST %s: Allow %q", path, h.Get("Allow"))
		}
	}
	if len(map[string]bool{etags["/"]: true, etags["/app.css"]: true, etags["/app.js"]: true}) != 3 {
		t.Fatalf("the files share an ETag: %v", etags)
	}
	_, h, _ := httpCall(t, http.MethodGet, base+"/", "", "", nil)
	if csp := h.Get("Content-Security-Policy"); !bytes.Contains([]byte(csp), []byte("script-src 'self'")) || h.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("the page's CSP %q, X-Frame-Options %q", csp, h.Get("X-Frame-Options"))
	}

	for _, path := range []string{"/index.html", "/app.js/x", "/web/app.js", "/favicon.ico", "/APP.JS", "/nope"} {
		st, h, raw := httpCall(t, http.MethodGet, base+path, "", "", nil)
		wantJSON(t, "GET "+path, st, h, raw, 404, "not_found")
	}
	// What was there before is untouched.
	st, h, raw := httpCall(t, http.MethodGet, base+"/healthz", "", "", nil)
	wantJSON(t, "GET /healthz", st, h, raw, 200, "")
	st, h, raw = httpCall(t, http.MethodPost, base+"/v1/tokens", "", `{"user":"alice"}`, nil)
	wantJSON(t, "POST /v1/tokens without a key configured", st, h, raw, 503, "unavailable")
	g.login(t, "alice", "web")
}
