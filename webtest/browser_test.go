// Package webtest holds the web client's end-to-end browser test: an
// all-in-one node in the test process, and scenario.mjs driving Debian's
// Chromium through playwright-core (pinned in package-lock.json, installed
// into node_modules by scripts/deps).
package webtest

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-im/parley/allinone"
	"github.com/parley-im/parley/internal/allinonetest"
	"github.com/parley-im/parley/internal/testutil"
)

// TestBrowser runs scenario.mjs against a fresh all-in-one node: two users
// sign in with the dev sign-in, talk in a direct conversation and a group,
// see unread badges, read receipts and typing live; one of them loses the
// network, reconnects by himself and catches up; a second device pages back
// through history. Screenshots of the key steps go to
// $PARLEY_TEST_ARTIFACTS/webtest (else a temporary directory). Chromium,
// Node and webtest/node_modules must be installed (scripts/deps): without
// them the test fails, it does not skip.
func TestBrowser(t *testing.T) {
	chromium := os.Getenv("PARLEY_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium is missing (%v): run scripts/deps", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing (%v): run scripts/deps", err)
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("webtest/node_modules has no playwright-core (%v): run scripts/deps (it runs npm ci --prefix webtest)", err)
	}

	artifacts := t.TempDir()
	if dir := os.Getenv("PARLEY_TEST_ARTIFACTS"); dir != "" {
		artifacts = filepath.Join(dir, "webtest")
		if err := os.RemoveAll(artifacts); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(artifacts, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots go to %s", artifacts)

	url := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "scenario.mjs")
	cmd.Env = append(os.Environ(), "PARLEY_URL="+url, "PARLEY_ARTIFACTS="+artifacts, "PARLEY_CHROMIUM="+chromium)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("the browser scenario did not finish in time; screenshots in %s; its output:\n%s", artifacts, out)
		}
		t.Fatalf("the browser scenario failed (%v); screenshots in %s; its output:\n%s", err, artifacts, out)
	}
	t.Logf("the browser scenario passed in %v:\n%s", time.Since(start).Round(100*time.Millisecond), out)
}

// startNode runs an all-in-one node on loopback ports until the test ends
// and returns the web client's URL once the node is ready.
func startNode(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	secret, apiKey := make([]byte, 32), make([]byte, 24)
	rand.Read(secret)
	rand.Read(apiKey)
	n := allinonetest.Run(t, allinone.Config{
		DataDir: dir, BrokerListen: "127.0.0.1:0", Listen: "127.0.0.1:0", Partitions: 2,
		TokenSecret: secret, APIKey: apiKey,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	base := "http://" + n.GatewayAddr().String()
	hc := &http.Client{Timeout: 5 * time.Second}
	testutil.WaitFor(t, 30*time.Second, "the node to be ready (/readyz)", func() bool {
		resp, err := hc.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	code := n.DevLoginCode()
	if code == "" {
		t.Fatal("the all-in-one node on loopback has no dev sign-in code")
	}
	// The address parley dev prints: the code rides in the fragment.
	return base + "/#code=" + code
}

// tWriter sends the node's log lines to the test's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
