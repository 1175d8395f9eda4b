package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/parley-im/parley/internal/testutil"
	"github.com/parley-im/parley/kafka"
	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// startDev starts `parley dev` (as `parley` with no command) on dataDir and
// returns it with its broker address, read from what it prints.
func startDev(t *testing.T, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(parleyBin, "--data-dir", dataDir, "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--partitions", "4", "--log-level", "warn")
	return cmd, startPrinting(t, cmd)
}

// startPrinting starts a `parley dev` command and returns the broker
// address it prints; the process is killed when the test ends if it still
// runs.
func startPrinting(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	broker, _ := startPrintingBoth(t, cmd)
	return broker
}

// startPrintingBoth is startPrinting, also returning the public
// (WebSocket) address.
func startPrintingBoth(t *testing.T, cmd *exec.Cmd) (broker, public string) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	b := testutil.ReadDevBanner(t, stdout, 60*time.Second)
	return b.Broker, b.Public
}

// TestDevBinary runs the real binary with no arguments: it serves commands,
// stops cleanly on SIGTERM, and continues every seq when started again.
func TestDevBinary(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	conv := newMsgID()
	reply := &parleyv1.ReplyTo{Node: replyNode}
	send := func(cmid string) *parleyv1.Command {
		return &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", Cmid: cmid, ReplyTo: reply,
			Body: &parleyv1.Command_Send{Send: &parleyv1.Send{Kind: "text", Body: []byte(`"hi"`)}}}
	}
	round := func(cmds ...*parleyv1.Command) []int64 {
		began := time.Now()
		cmd, addr := startDev(t, dataDir)
		defer func() { t.Logf("round took %v", time.Since(began)) }()
		c := &cluster{t: t, kc: kafka.Config{Brokers: []string{addr}, Logger: testLogger(t)}.WithDefaults()}
		ctx, cancel := context.WithCancel(context.Background())
		outs := c.collectOutcomes(ctx)
		c.produce(cmds...)
		last := cmds[len(cmds)-1].MsgId
		waitFor(t, time.Minute, "the outcomes", func() bool { return len(outs.get(last)) == 1 })
		t.Logf("outcomes after %v", time.Since(began))
		var seqs []int64
		for _, cm := range cmds {
			seqs = append(seqs, outs.get(cm.MsgId)[0].GetEvent().GetSeq())
		}
		cancel()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("parley dev did not exit cleanly on SIGTERM: %v", err)
		}
		return seqs
	}
	create := &parleyv1.Command{Conv: conv, MsgId: newMsgID(), From: "alice", ReplyTo: reply,
		Body: &parleyv1.Command_Create{Create: &parleyv1.Create{Kind: parleyv1.ConvKind_CONV_KIND_GROUP, Members: []string{"bob"}}}}
	if got := round(create, send("1"), send("2")); got[1] != 2 || got[2] != 3 {
		t.Fatalf("first run seqs %v", got)
	}
	if got := round(send("3"), send("1")); got[0] != 4 || got[1] != 2 {
		t.Fatalf("after a restart: seqs %v, want 4 for a new message and 2 for the retry of the first", got)
	}
	for _, f := range []string{"api-key", "token-secret", "broker", "store"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("data dir lacks %s: %v", f, err)
		}
	}
}

// TestDevWebSocket: `parley dev` serves the client protocol: a client
// with a token from `parley token` connects, creates a group, sends, is
// acked with the seq, and reads the message back through history.
func TestDevWebSocket(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(parleyBin, "--data-dir", dataDir, "--broker-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--log-level", "warn")
	_, public := startPrintingBoth(t, cmd)
	began := time.Now()
	t.Logf("dev started")
	tok, err := exec.Command(parleyBin, "token", "--data-dir", dataDir, "--user", "alice").Output()
	if err != nil {
		t.Fatalf("parley token: %v", err)
	}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+public+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(req map[string]any) map[string]any {
		t.Helper()
		if err := conn.WriteJSON(req); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			var r map[string]any
			if err := conn.ReadJSON(&r); err != nil {
				t.Fatal(err)
			}
			if r["id"] == req["id"] {
				return r
			}
		}
	}
	if r := call(map[string]any{"op": "auth", "id": "1", "token": strings.TrimSpace(string(tok)), "device": "cli"}); r["op"] != "auth_ok" {
		t.Fatalf("auth: %v", r)
	}
	created := call(map[string]any{"op": "create", "id": "2", "kind": "group", "members": []string{"bob"}})
	conv, _ := created["conv"].(string)
	if conv == "" {
		t.Fatalf("create: %v", created)
	}
	if r := call(map[string]any{"op": "send", "id": "3", "conv": conv, "cmid": "c1", "body": "hello"}); r["op"] != "ack" || r["seq"] != 2.0 {
		t.Fatalf("send: %v", r)
	}
	var events []any
	waitFor(t, 30*time.Second, "the message in history", func() bool {
		r := call(map[string]any{"op": "history", "id": "4", "conv": conv, "after": 0})
		events, _ = r["events"].([]any)
		return len(events) == 2
	})
	if m := events[1].(map[string]any); m["body"] != "hello" || m["from"] != "alice" {
		t.Fatalf("history message %v", m)
	}
	t.Logf("history read after %v; stopping", time.Since(began))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("parley dev on SIGTERM: %v", err)
	}
	t.Logf("stopped after %v", time.Since(began))
}

// TestDevSurvivesDescriptorExhaustion: a flood of connections that runs the
// process out of file descriptors does not stop it; once they go, clients
// connect again.
func TestDevSurvivesDescriptorExhaustion(t *testing.T) {
	cmd := exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, parleyBin, "--data-dir", t.TempDir(), "--broker-listen", "127.0.0.1:0",
		"--listen", "127.0.0.1:0", "--partitions", "2", "--log-level", "error", "--token-secret", rtTokenSecret)
	_, public := startPrintingBoth(t, cmd)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 400 {
		c, err := net.DialTimeout("tcp", public, 5*time.Second)
		if err != nil {
			break
		}
		flood = append(flood, c)
	}
	// The process runs out of descriptors (the kernel queues the
	// connections it cannot accept).
	fds := func() int {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
		return len(entries)
	}
	waitFor(t, 30*time.Second, "parley dev to use up its descriptors", func() bool { return fds() >= 250 })
	t.Logf("%d connections opened; parley dev holds %d descriptors", len(flood), fds())
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	d := connect(t, "after the flood", "alice", "phone", nil, public)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.c.Ping(ctx); err != nil {
		t.Fatalf("ping after the flood: %v", err)
	}
}
