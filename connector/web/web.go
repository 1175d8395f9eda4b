// Package web holds the demo web client the connector serves at "/": one
// HTML page, its stylesheet and its script, plain files embedded in the
// binary (no build step). The page speaks the client protocol of
// PROTOCOL.md §2 to /v1/ws on the server that served it.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
)

//go:embed index.html app.css app.js
var files embed.FS

// Asset is one file of the web client, ready to serve.
type Asset struct {
	Body        []byte
	ContentType string
	// ETag is a strong validator derived from Body (quoted, as sent).
	ETag string
}

// assets maps each path the client is served at to its file.
var assets = map[string]*Asset{}

func init() {
	for path, f := range map[string]struct{ name, ctype string }{
		"/":        {"index.html", "text/html; charset=utf-8"},
		"/app.css": {"app.css", "text/css; charset=utf-8"},
		"/app.js":  {"app.js", "text/javascript; charset=utf-8"},
	} {
		body, err := files.ReadFile(f.name)
		if err != nil {
			panic(fmt.Sprintf("web: embedded %s: %v", f.name, err))
		}
		sum := sha256.Sum256(body)
		assets[path] = &Asset{Body: body, ContentType: f.ctype, ETag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
}

// Lookup returns the asset served at path ("/", "/app.css", "/app.js").
func Lookup(path string) (*Asset, bool) {
	a, ok := assets[path]
	return a, ok
}
