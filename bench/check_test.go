package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
)

// The checks of delivered events, on events made up here: every mistake a
// server could make must count as an error of the run.
func TestTrafficChecks(t *testing.T) {
	now := time.Now()
	body := func(at time.Time) []byte { return fmt.Appendf(nil, `{"t":%d,"text":"x"}`, at.UnixNano()) }
	msg := func(seq int64, from string, k int64) client.Event {
		return client.Event{Conv: "c1", Seq: seq, Type: "message", From: from, CMID: fmt.Sprintf("%x", k), Body: body(now.Add(-5 * time.Millisecond))}
	}
	setup := func() (*traffic, *receiver) {
		tr := newTraffic(Defaults(Config{Scenario: "dm"}), nil)
		tr.addSender("alice", nil, "c1")
		tr.addSender("bob", nil, "c1")
		return tr, tr.newReceiver("bob", nil)
	}
	ack := func(tr *traffic, sender int, ks ...int64) {
		for _, k := range ks {
			tr.senders[sender].acked.set(k)
			tr.senders[sender].n++
		}
	}
	sendersOf := func(tr *traffic) func(*receiver) []*sender {
		return func(*receiver) []*sender { return tr.senders }
	}

	t.Run("a clean run", func(t *testing.T) {
		tr, r := setup()
		tr.deliver(r, client.Event{Conv: "c1", Seq: 1, Type: "created"}, now)
		tr.deliver(r, msg(2, "alice", 0), now)
		tr.deliver(r, msg(3, "bob", 0), now)
		tr.deliver(r, msg(4, "alice", 1), now)
		ack(tr, 0, 0, 1)
		ack(tr, 1, 0)
		tr.check(sendersOf(tr))
		if first, n := tr.rec.errs.snapshot(); n != 0 {
			t.Fatalf("errors %v", first)
		}
		if got := tr.rec.count.Load(); got != 2 {
			t.Errorf("%d latencies recorded (deliveries to others), want 2", got)
		}
		if h := tr.rec.total(); h.Min() < 4000 || h.Max() > 6000*1000 {
			t.Errorf("latency %d..%d µs; want about 5 ms", h.Min(), h.Max())
		}
		if tr.own.Load() != 1 || r.n.Load() != 3 {
			t.Errorf("own %d, delivered %d; want 1 and 3", tr.own.Load(), r.n.Load())
		}
	})

	for _, tc := range []struct {
		name string
		evs  []client.Event
		acks []int64 // alice's acked messages
		want string
	}{
		{"a gap", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, msg(3, "alice", 0)}, []int64{0}, "got seq 3 of c1 after 1"},
		{"a repeat", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, msg(2, "alice", 0), msg(2, "alice", 0)}, []int64{0}, "got seq 2 of c1 after 2"},
		{"out of order", []client.Event{msg(2, "alice", 1), {Conv: "c1", Seq: 1, Type: "created"}}, []int64{1}, "got seq 2 of c1 after 0"},
		{"a message twice", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, msg(2, "alice", 0), msg(3, "alice", 0)}, []int64{0}, "got message alice/0 twice"},
		{"a stranger", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, msg(2, "mallory", 0)}, nil, "that nobody sent"},
		{"a bad cmid", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, {Conv: "c1", Seq: 2, Type: "message", From: "alice", CMID: "-1"}}, nil, "that nobody sent"},
		{"a foreign body", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, {Conv: "c1", Seq: 2, Type: "message", From: "alice", CMID: "0", Body: []byte(`{"text":"hi"}`)}}, []int64{0}, "not sent by this tool"},
		{"an acked message lost", []client.Event{{Conv: "c1", Seq: 1, Type: "created"}, msg(2, "alice", 0)}, []int64{0, 1}, "never got 1 acked messages of alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, r := setup()
			for _, ev := range tc.evs {
				tr.deliver(r, ev, now)
			}
			ack(tr, 0, tc.acks...)
			tr.check(sendersOf(tr))
			first, n := tr.rec.errs.snapshot()
			if n == 0 || !strings.Contains(strings.Join(first, "\n"), tc.want) {
				t.Fatalf("errors %v; want one saying %q", first, tc.want)
			}
		})
	}
}

// TestBody: a message's body is a JSON object whose send time sentAt
// reads, padded with the configured text.
func TestBody(t *testing.T) {
	tr := newTraffic(Config{BodySize: 32}, nil)
	for _, at := range []int64{0, 1_763_800_000_123_456_789, -5} {
		b := tr.body(at)
		var v struct {
			T    int64  `json:"t"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.T != at || v.Text != strings.Repeat("x", 32) {
			t.Fatalf("body %s: %+v, %v", b, v, err)
		}
		if got, ok := sentAt(b); !ok || got != at {
			t.Fatalf("sentAt(%s) = %d, %v; want %d", b, got, ok, at)
		}
	}
}

func TestSentAt(t *testing.T) {
	for body, want := range map[string]int64{`{"t":123,"text":"x"}`: 123, `{"t":0,"text":""}`: 0} {
		if got, ok := sentAt([]byte(body)); !ok || got != want {
			t.Errorf("sentAt(%s) = %d, %v; want %d", body, got, ok, want)
		}
	}
	for _, body := range []string{``, `{}`, `{"t":12}`, `{"text":"x","t":1}`, `{"t":"1","x":1}`, `{"t":1e3,"x":1}`} {
		if got, ok := sentAt([]byte(body)); ok {
			t.Errorf("sentAt(%s) = %d; want no time", body, got)
		}
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	for _, k := range []int64{0, 63, 64, 1000} {
		if b.set(k) {
			t.Errorf("set(%d) reported it was set", k)
		}
		if !b.set(k) || !b.has(k) {
			t.Errorf("set(%d) did not stick", k)
		}
	}
	for _, k := range []int64{1, 62, 65, 999, 100000} {
		if b.has(k) {
			t.Errorf("has(%d) without a set", k)
		}
	}
}

// TestRecorder: a value is counted once, in the interval it was recorded
// in and in the total, whether or not its interval has ended.
func TestRecorder(t *testing.T) {
	r := newRecorder()
	now := time.Now()
	for i := range 100 {
		r.record(i, now, time.Duration(i+1)*time.Millisecond)
	}
	if h := r.interval(); h.TotalCount() != 100 || h.Max() < 99_000 {
		t.Fatalf("first interval: %d values, max %d µs; want 100, about 100,000", h.TotalCount(), h.Max())
	}
	for i := range 10 {
		r.record(i, now, time.Second)
	}
	if h := r.total(); h.TotalCount() != 110 || h.Min() > 1000 {
		t.Fatalf("total within the second interval: %d values, min %d µs; want 110, about 1,000", h.TotalCount(), h.Min())
	}
	if h := r.interval(); h.TotalCount() != 10 || h.Min() < 999_000 {
		t.Fatalf("second interval: %d values, min %d µs; want 10, about 1,000,000", h.TotalCount(), h.Min())
	}
	if h := r.total(); h.TotalCount() != 110 {
		t.Fatalf("total: %d values, want 110", h.TotalCount())
	}
	if r.interval().TotalCount() != 0 || r.count.Load() != 110 {
		t.Fatalf("an empty interval, and a count of %d, want 110", r.count.Load())
	}
}

// A loopback connection's stream is taken apart into frames however the
// reads cut it, and a frame out of turn is an error.
func TestFrameReader(t *testing.T) {
	const size = loopbackHeader + 5
	var stream []byte
	for seq := range 4 {
		f := make([]byte, size)
		loopbackFrame(f, uint64(seq), int64(100+seq))
		stream = append(stream, f...)
	}
	for _, cut := range []int{1, 7, size - 1, size, size + 1, 3 * size, len(stream)} {
		r := frameReader{size: size}
		var ats []int64
		for b := stream; len(b) > 0; {
			n := min(cut, len(b))
			if err := r.take(b[:n], func(at int64) { ats = append(ats, at) }); err != nil {
				t.Fatalf("reads of %d: %v", cut, err)
			}
			b = b[n:]
		}
		if fmt.Sprint(ats) != "[100 101 102 103]" || r.next != 4 {
			t.Errorf("reads of %d: frames sent at %v, next %d; want [100 101 102 103], 4", cut, ats, r.next)
		}
	}
	r := frameReader{size: size}
	skipped := append(append([]byte(nil), stream[:size]...), stream[2*size:3*size]...) // frames 0, 2
	if err := r.take(skipped, func(int64) {}); err == nil || !strings.Contains(err.Error(), "frame 2 came where 1 was due") {
		t.Errorf("frame 1 missing: err %v", err)
	}
}

// Loopback runs no server, so it refuses a target.
func TestLoopbackTakesNoTarget(t *testing.T) {
	_, err := Run(t.Context(), Config{Scenario: "loopback", Target: "ws://127.0.0.1:1/v1/ws", TokenSecret: "s"})
	if err == nil || !strings.Contains(err.Error(), "takes no target") {
		t.Fatalf("loopback with a target: err %v", err)
	}
}

// The CPU meter splits the machine's busy time from the time its
// hypervisor stole, and the report shows both.
func TestCPUFromProcStat(t *testing.T) {
	//            user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  1000 20 300 9000 50 4 6 70 0 0\ncpu0 500 10 150 4500 25 2 3 35 0 0\n"
	busy, steal, ok := parseProcStat([]byte(stat))
	if !ok || busy != (1000+20+300+4+6)*10*time.Millisecond || steal != 70*10*time.Millisecond {
		t.Errorf("busy %v, steal %v, ok %v; want 13.3s, 700ms", busy, steal, ok)
	}
	for _, bad := range []string{"", "intr 1 2 3 4 5 6 7 8 9\n", "cpu 1 2 3\n"} {
		if _, _, ok := parseProcStat([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}

	text, row := reports(&Result{Scenario: "dm", OK: true, CPU: &CPU{Server: 1.15, Bench: 0.79, Other: 0.03, Stolen: 0.09}})
	if want := "cpu       server 1.15 cores, bench 0.79, other 0.03, stolen 0.09\n"; !strings.Contains(text, want) {
		t.Errorf("text report %q lacks %q", text, want)
	}
	if !strings.Contains(row, "| 1.15 / 0.79 / 0.09 |") {
		t.Errorf("markdown row %q lacks the CPU column", row)
	}
}

// reports renders res as the text report and as a markdown row.
func reports(res *Result) (text, row string) {
	var b bytes.Buffer
	WriteText(&b, res)
	return b.String(), MarkdownRow(res)
}

// The speed probe measures a real round trip over loopback and a real
// hash rate, and both reports carry them.
func TestSpeed(t *testing.T) {
	sp, err := measureSpeed()
	if err != nil {
		t.Fatal(err)
	}
	// A loopback round trip is two system calls each way and two
	// wake-ups: microseconds, never nothing and never near a second.
	if sp.LoopbackRTTMicros < 0.5 || sp.LoopbackRTTMicros > 100_000 || sp.SHA256MBPerSec <= 0 {
		t.Errorf("speed %+v", sp)
	}
	text, row := reports(&Result{Scenario: "dm", OK: true, Machine: Machine{Speed: &Speed{LoopbackRTTMicros: 17.25, SHA256MBPerSec: 1761.4}}})
	if want := "speed     loopback round trip 17.2µs, SHA-256 1761 MB/s on one core\n"; !strings.Contains(text, want) {
		t.Errorf("text report %q lacks %q", text, want)
	}
	if !strings.HasSuffix(row, "| 17.2 / 1761 | ok |") {
		t.Errorf("markdown row %q lacks the speed column", row)
	}
	header, _, _ := strings.Cut(MarkdownHeader, "\n")
	if bars, want := strings.Count(row, "|"), strings.Count(header, "|"); bars != want {
		t.Errorf("a row has %d bars, the header %d", bars, want)
	}
}

// The trend compares the deliveries of the second and the last quarter of
// the sending, and calls a run that fell behind what it is.
func TestTrend(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(sec float64) int64 { return start.Add(time.Duration(sec * float64(time.Second))).UnixNano() }
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	for _, tc := range []struct {
		name        string
		early, late float64 // milliseconds, each quarter's deliveries
		sustained   bool
	}{
		{"flat", 300, 310, true},
		{"growing with the time", 2000, 4600, false}, // 2.3 times
		{"a little slower", 300, 440, true},          // 1.47 times
		{"twice a low latency", 8, 24, true},         // less than 100 ms apart
		{"just past both bounds", 250, 376, false},   // 1.504 times, 126 ms
	} {
		tr := newTrendRecorder(start, 8*time.Second) // quarters: [2s, 4s) and [6s, 8s)
		for i := range 100 {
			tr.record(i, at(2+float64(i)/50), ms(tc.early))
			tr.record(i, at(6+float64(i)/50), ms(tc.late))
			// Outside the two quarters: the start, the third quarter,
			// and the catching up after the sending.
			tr.record(i, at(float64(i)/50), ms(10*tc.late))
			tr.record(i, at(4+float64(i)/50), ms(10*tc.late))
			tr.record(i, at(8+float64(i)/50), ms(10*tc.late))
		}
		got := tr.trend()
		if got == nil {
			t.Fatalf("%s: no trend", tc.name)
		}
		// 400 of the 500 deliveries were made while the sends lasted (8 s).
		if got.EarlyCount != 100 || got.LateCount != 100 || got.Sustained != tc.sustained || got.WhileSending != 50 ||
			got.EarlyP50 < tc.early*0.99 || got.EarlyP50 > tc.early*1.01 || got.LateP50 < tc.late*0.99 || got.LateP50 > tc.late*1.01 {
			t.Errorf("%s: %+v; want p50 %v → %v ms over 100 each, sustained %v, 50 a second while sending", tc.name, got, tc.early, tc.late, tc.sustained)
		}
	}

	// Nothing delivered in one of the quarters (a short run): no trend.
	tr := newTrendRecorder(start, 8*time.Second)
	tr.record(0, at(3), ms(5))
	if got := tr.trend(); got != nil {
		t.Errorf("one quarter empty: %+v", got)
	}

	text, row := reports(&Result{Scenario: "dm", OK: true, Rate: 52104, Unit: "msgs/s",
		Trend: &Trend{EarlyP50: 2016.26, LateP50: 5570.56, EarlyCount: 214799, LateCount: 190886, WhileSending: 41234}})
	if want := "trend     NOT SUSTAINED, deliveries fell behind the sends: p50 2016.26ms for the deliveries in the second quarter of the sending, 5570.56ms in the last (214799 and 190886 samples); 41,234 msgs/s while sending\n"; !strings.Contains(text, want) {
		t.Errorf("text report %q lacks %q", text, want)
	}
	if !strings.Contains(row, "| 52,104 msgs/s **not sustained** (p50 2016 → 5571 ms; 41,234 while sending) |") {
		t.Errorf("markdown row %q does not say the run was not sustained", row)
	}
	text, row = reports(&Result{Scenario: "dm", OK: true, Rate: 35575, Unit: "msgs/s",
		Trend: &Trend{EarlyP50: 282.88, LateP50: 281.34, EarlyCount: 5, LateCount: 6, Sustained: true}})
	if want := "trend     sustained: p50 282.88ms"; !strings.Contains(text, want) || !strings.Contains(row, "| 35,575 msgs/s |") {
		t.Errorf("a sustained run's reports: %q, %q", text, row)
	}
}
