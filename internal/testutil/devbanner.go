package testutil

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
)

// DevBanner is what `parley dev` prints when it is up.
type DevBanner struct {
	Broker string // host:port
	Public string // host:port of the public listener
	API    string // the HTTP API's base, http://host:port/v1
	APIKey string
}

// ReadDevBanner reads `parley dev`'s standard output until its banner is
// complete and returns it, failing tb if it is not within timeout. It goes
// on reading out to its end in the background, so that the process never
// blocks on a full pipe.
func ReadDevBanner(tb testing.TB, out io.Reader, timeout time.Duration) DevBanner {
	tb.Helper()
	found := make(chan DevBanner, 1)
	go func() {
		var b DevBanner
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 2 && f[0] == "broker":
				b.Broker = f[1]
			case len(f) >= 2 && f[0] == "public":
				b.Public = strings.TrimSuffix(strings.TrimPrefix(f[1], "ws://"), "/v1/ws")
			case len(f) >= 3 && f[0] == "HTTP" && f[1] == "API":
				b.API = strings.TrimSuffix(f[2], "/")
			case len(f) >= 3 && f[0] == "API" && f[1] == "key":
				b.APIKey = f[2]
			case strings.HasPrefix(sc.Text(), "Stop with"):
				found <- b
			}
		}
	}()
	select {
	case b := <-found:
		return b
	case <-time.After(timeout):
		tb.Fatalf("parley dev printed no banner within %v", timeout)
	}
	return DevBanner{}
}
