package connector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-im/parley/schema/parley/v1"
)

// Benchmarks of a connector's per-frame work: decoding a client's send
// frame into its command, encoding the ack the client gets back (with the
// WebSocket header the writer puts in front of it), and turning a push
// batch from fanout into event frames queued on the sessions of its users.
// Run with go test -run '^$' -bench . -benchmem ./connector.

const (
	benchConv = "2lKGCVZf5PqQ8bW0ZKUVTXh5Qx3" // a group (KSUID)
	benchUser = "user-000417"
	benchCMID = "5f0c6f43-3e4b-4a43-9a1e-0d7c1b2a9e11"
)

// benchBody is a chat message body of about 100 bytes.
const benchBody = `{"text":"Are we still on for the design review at 3pm? I moved it to room 4B.","mentions":["bob"]}`

// benchGateway is a gateway with only what the push and reply paths touch:
// its limits, a hub and a logger.
func benchGateway(b *testing.B) *Gateway {
	g := &Gateway{
		cfg: GatewayConfig{PushSecret: []byte(strings.Repeat("p", 16))}.withDefaults(),
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		hub: newHub(),
	}
	var err error
	if g.m, err = newGatewayMetrics(prometheus.NewRegistry(), func() float64 { return 0 }); err != nil {
		b.Fatal(err)
	}
	return g
}

// benchSession is an authenticated session as serve builds it, without a
// connection and not started, so no writer runs: the benchmarks play its
// writer by taking its queue.
func benchSession(g *Gateway, user, device string) *session {
	return &session{g: g, user: user, device: device, finished: make(chan struct{}),
		done: make(chan struct{}), inFlight: make(chan struct{}, maxInFlight), histories: make(chan struct{}, maxHistoryInFlight)}
}

// takeFrames takes s's queued frames as its writer does, with their
// WebSocket headers, and returns how many frames there were.
func takeFrames(s *session, batch [][]byte, hdrs []byte) ([][]byte, []byte, int) {
	batch = s.take(batch)
	n, size := len(batch), 0
	hdrs = hdrs[:0]
	for _, f := range batch {
		hdrs = appendFrameHeader(hdrs, opText, len(f))
		size += len(f)
	}
	s.queued.Add(-int64(size))
	clear(batch)
	return batch[:0], hdrs, n
}

// BenchmarkDecodeSendFrame decodes a client's send frame and makes its
// command, as the read loop and the request goroutine do before Commander.Do.
func BenchmarkDecodeSendFrame(b *testing.B) {
	frame := []byte(`{"op":"send","id":"r1842","conv":"` + benchConv + `","cmid":"` + benchCMID + `","kind":"text","body":` + benchBody + `}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	var cmds []*parleyv1.Command
	for b.Loop() {
		req, perr := parseFrame(frame)
		if perr != nil {
			b.Fatal(perr.msg)
		}
		var ierr *inputError
		if cmds, ierr = commandsFor(benchUser, req); ierr != nil {
			b.Fatal(ierr.msg)
		}
	}
	if len(cmds) != 1 || cmds[0].Conv != benchConv || cmds[0].Cmid != benchCMID || string(cmds[0].GetSend().GetBody()) != benchBody {
		b.Fatalf("commands %v", cmds)
	}
}

// BenchmarkSendAck encodes and queues the ack of a sequenced send
// (session.sendAck), then takes it off the queue with its WebSocket frame
// header, as the writer does before its writev.
func BenchmarkSendAck(b *testing.B) {
	g := benchGateway(b)
	s := benchSession(g, benchUser, "phone")
	ack := reply{Op: "ack", ID: "r1842", Conv: benchConv, CMID: benchCMID, MsgID: "2lKGHwTLl1m0cRCvRz2zQ5CjYV8", Seq: 48_213}
	var (
		batch [][]byte
		hdrs  []byte
		n     int
	)
	b.ReportAllocs()
	for b.Loop() {
		s.sendAck(ack.ID, ack.Conv, ack.CMID, ack.MsgID, ack.Seq)
		if batch, hdrs, n = takeFrames(s, batch, hdrs); n != 1 {
			b.Fatalf("%d frames queued, want 1", n)
		}
	}
	s.sendAck(ack.ID, ack.Conv, ack.CMID, ack.MsgID, ack.Seq)
	batch = s.take(batch)
	var got reply
	if err := json.Unmarshal(batch[0], &got); err != nil || got.Op != "ack" || got.MsgID != ack.MsgID || got.Seq != ack.Seq || got.CMID != ack.CMID {
		b.Fatalf("ack frame %s: %v", batch[0], err)
	}
	if want := appendFrameHeader(nil, opText, len(batch[0])); !bytes.Equal(hdrs, want) {
		b.Fatalf("header % x, want % x", hdrs, want)
	}
}

// benchPushBatch is what fanout posts to one node for n message events of
// a 1,000-member group spread over 10 nodes: each push names the users of
// the group online on this node (70).
func benchPushBatch(b *testing.B, n int) ([]byte, []string) {
	users := make([]string, 70)
	for i := range users {
		users[i] = fmt.Sprintf("user-%06d", i*10)
	}
	batch := &parleyv1.PushBatch{From: "fanout-1"}
	for i := range n {
		batch.Pushes = append(batch.Pushes, &parleyv1.Push{Users: users, Event: &parleyv1.Event{
			Conv: benchConv, Seq: int64(48_213 + i), Type: parleyv1.EventType_EVENT_TYPE_MESSAGE,
			MsgId: fmt.Sprintf("2lKGHwTLl1m0cRCvRz2z%07d", i), Cmid: fmt.Sprintf("5f0c6f43-3e4b-4a43-9a1e-%012d", i),
			From: users[i%len(users)], Ts: 1_760_000_000_123 + int64(i), Kind: "text", Body: []byte(benchBody),
		}})
	}
	body, err := proto.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	return body, users
}

// BenchmarkPushFrames decodes a push batch and encodes each push as the
// client's event frame (pushFrames, called by handlePush).
func BenchmarkPushFrames(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			body, users := benchPushBatch(b, n)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var frames []pushFrame
			for b.Loop() {
				var err error
				if frames, err = pushFrames(body); err != nil {
					b.Fatal(err)
				}
			}
			if len(frames) != n || len(frames[n-1].users) != len(users) {
				b.Fatalf("%d frames", len(frames))
			}
			var ev struct {
				Op   string          `json:"op"`
				Seq  int64           `json:"seq"`
				Body json.RawMessage `json:"body"`
			}
			if err := json.Unmarshal(frames[n-1].frame, &ev); err != nil || ev.Op != "event" || ev.Seq != int64(48_213+n-1) || string(ev.Body) != benchBody {
				b.Fatalf("frame %s: %v", frames[n-1].frame, err)
			}
		})
	}
}

// BenchmarkHandlePush serves a push request of 100 events for 70 users,
// each with one connection on this node (handlePush: check the secret,
// pushFrames, queue each run of pushes to the same users on each of their
// sessions; here the whole batch is one run per chunk), then empties every
// session's queue as its writer would: 7,000 frames queued per op.
func BenchmarkHandlePush(b *testing.B) {
	const events = 100
	body, users := benchPushBatch(b, events)
	g := benchGateway(b)
	sessions := make([]*session, len(users))
	for i, u := range users {
		sessions[i] = benchSession(g, u, "phone")
		if !g.hub.add(sessions[i], g.cfg.MaxConnsPerUser, nil) {
			b.Fatal("hub refused a session")
		}
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI(PushPath)
	ctx.Request.Header.SetBytesV(PushSecretHeader, g.cfg.PushSecret)
	ctx.Request.SetBody(body)
	var (
		batch [][]byte
		hdrs  []byte
		n     int
	)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		ctx.Response.Reset()
		g.handlePush(&ctx)
		for _, s := range sessions {
			if batch, hdrs, n = takeFrames(s, batch, hdrs); n != events {
				b.Fatalf("session of %s got %d frames, want %d", s.user, n, events)
			}
		}
	}
	if ctx.Response.StatusCode() != fasthttp.StatusOK || string(ctx.Response.Body()) != fmt.Sprintf(`{"delivered":%d}`, events*len(users)) {
		b.Fatalf("answered %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkWriteLoop queues a run of 16 event frames on a started session
// and runs its writer, which writes them in one writev to a loopback TCP
// connection whose other end is drained: the per-write cost a session pays
// for each push batch, system call included.
func BenchmarkWriteLoop(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	drained := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			drained <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		drained <- n
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	g := benchGateway(b)
	s := benchSession(g, benchUser, "phone")
	s.conn, s.started = conn, true
	frames, _ := pushFrames(mustPushBody(b, 16))
	run := make([][]byte, len(frames))
	size := int64(0)
	for i, f := range frames {
		run[i] = f.frame
		size += int64(len(f.frame))
	}
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		if !s.enqueueHeld(run...) {
			b.Fatal("the writer was running")
		}
		s.writeLoop()
	}
	wrote := int64(b.N) * size
	conn.Close()
	if got := <-drained; got < wrote {
		b.Fatalf("the other end read %d bytes, want at least %d", got, wrote)
	}
}

// mustPushBody is benchPushBatch's body of n events.
func mustPushBody(b *testing.B, n int) []byte {
	body, _ := benchPushBatch(b, n)
	return body
}
