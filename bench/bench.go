// Package bench is Parley's load tool (`parley bench`): it runs one
// scenario against a `parley dev` it starts (or a node it is pointed at),
// through the Go client over real WebSockets, checks every event it is
// delivered, and reports throughput, latency percentiles (HDR histograms),
// CPU and memory, as text, JSON and a plot.
//
// Scenarios:
//
//   - dm: clients in pairs, each pair a direct conversation, every client
//     sending to its pair at a set total rate or as fast as acks come back;
//   - group: one group whose members are all online, some of them sending;
//   - idle: connections that only authenticate and keep alive; the
//     server's memory per connection;
//   - catchup: one device reconnecting to many events it missed;
//   - rebuild: the events topic replayed into an empty Pebble store;
//   - sequencer: the sequencer against a plain transactional copy of the
//     same commands through the same broker, the ceiling it cannot beat;
//   - loopback: no Parley at all, the machine's floor for messaging: the
//     CPU of one frame carried over loopback TCP on a connection of its
//     own, which each of a dm message's four frames costs at least when
//     none coalesces.
//
// A run with any error (a lost, doubled or misordered event, a failed
// send) is a failed run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// Config is a run's parameters. Zero values take each scenario's
// defaults (see Defaults).
type Config struct {
	Scenario string

	// Target is the WebSocket URL of a running node; empty starts a
	// `parley dev` child process on a fresh data dir (and, for dm, group
	// and catchup, lifts the per-connection frame rate limit).
	Target string
	// TokenSecret signs the clients' tokens (needed with Target).
	TokenSecret string
	// ParleyBin is the binary started as `parley dev`; default this
	// process's own executable.
	ParleyBin string
	// ServerArgs are extra flags for `parley dev`.
	ServerArgs []string
	// ServerEnv is extra environment, NAME=value, for the servers this
	// tool starts (`parley dev`, and the connector nodes of a spread idle
	// run) and not for the tool itself: the Go runtime's GOGC, say.
	ServerEnv []string
	// Partitions of the topics of a started server (or of the embedded
	// broker of rebuild and sequencer).
	Partitions int

	Clients  int           // dm: clients (pairs of them); idle, loopback: connections
	Members  int           // group: members, all online
	Senders  int           // group: members that send
	Rate     float64       // dm, group: messages/s in all; 0: each sender as fast as acks come; loopback: frames/s
	Window   int           // sends in flight per sender
	Duration time.Duration // dm, group, loopback: how long the senders send; idle: how long the connections are held
	Events   int           // catchup, rebuild, sequencer: events to produce
	Convs    int           // catchup, rebuild, sequencer: conversations the events are spread over
	BodySize int           // dm, group, catchup: bytes of text in each message body; loopback: a frame's, besides 128

	// ConnsPerProcess is how many idle connections one process holds:
	// more are spread over several server and client processes (see
	// runIdleSpread). Default: the file descriptor hard limit less a
	// reserve; all of Clients where no limit is known.
	ConnsPerProcess int
	// FirstClient numbers the first connection of an idle run; a worker
	// process of a spread run opens its share from there.
	FirstClient int

	// Progress receives a progress line every second; nil: none.
	Progress io.Writer
	// Log receives the clients' and embedded parts' warnings; default
	// discards them (errors count in the result instead).
	Log *slog.Logger
}

// Scenarios lists the scenario names.
var Scenarios = []string{"dm", "group", "idle", "catchup", "rebuild", "sequencer", "loopback"}

// Defaults returns cfg with each unset parameter at its scenario's
// default: moderate sizes that run in well under a minute here.
func Defaults(cfg Config) Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	switch cfg.Scenario {
	case "dm":
		def(&cfg.Clients, 200)
		def(&cfg.Window, 4)
	case "group":
		def(&cfg.Members, 200)
		def(&cfg.Senders, 4)
		def(&cfg.Window, 4)
	case "idle":
		def(&cfg.Clients, 10_000)
		if lim := fdLimit(); lim > 0 {
			def(&cfg.ConnsPerProcess, max(lim-fdReserve(lim), 1))
		} else {
			def(&cfg.ConnsPerProcess, cfg.Clients) // no limit known: one process
		}
	case "catchup":
		def(&cfg.Events, 100_000)
		def(&cfg.Convs, 10)
	case "rebuild", "sequencer":
		def(&cfg.Events, 200_000)
		def(&cfg.Convs, 1000)
	case "loopback":
		def(&cfg.Clients, 2000)
	}
	def(&cfg.Partitions, 8)
	def(&cfg.BodySize, 32)
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return cfg
}

func (cfg Config) validate() error {
	switch {
	case !validScenario(cfg.Scenario):
		return fmt.Errorf("unknown scenario %q (want one of %s)", cfg.Scenario, strings.Join(Scenarios, ", "))
	case cfg.Scenario == "dm" && cfg.Clients%2 != 0:
		return fmt.Errorf("dm needs an even number of clients, not %d", cfg.Clients)
	case cfg.Scenario == "group" && (cfg.Members < 2 || cfg.Senders > cfg.Members):
		return fmt.Errorf("group needs at least 2 members and at most as many senders (%d members, %d senders)", cfg.Members, cfg.Senders)
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return fmt.Errorf("bad rate %v", cfg.Rate)
	case cfg.Target != "" && cfg.TokenSecret == "":
		return errors.New("a target needs the token secret its node verifies tokens with")
	case cfg.Target != "" && (cfg.Scenario == "rebuild" || cfg.Scenario == "sequencer"):
		return fmt.Errorf("%s runs on an embedded broker of its own; it takes no target", cfg.Scenario)
	case cfg.Target != "" && cfg.Scenario == "loopback":
		return errors.New("loopback runs no Parley; it takes no target")
	case cfg.Convs > cfg.Events && cfg.Events > 0:
		return fmt.Errorf("%d events cannot fill %d conversations", cfg.Events, cfg.Convs)
	case cfg.Scenario == "loopback" && fdLimit() > 0 && 2*cfg.Clients+fdReserve(fdLimit()) > fdLimit():
		return fmt.Errorf("%d loopback connections need %d file descriptors and %d more, but the hard limit (ulimit -Hn) is %d", cfg.Clients, 2*cfg.Clients, fdReserve(fdLimit()), fdLimit())
	case cfg.Scenario == "idle" && fdLimit() > 0 && cfg.ConnsPerProcess+fdReserve(fdLimit()) > fdLimit():
		return fmt.Errorf("%d connections per process need as many file descriptors and %d more, but the hard limit (ulimit -Hn) is %d", cfg.ConnsPerProcess, fdReserve(fdLimit()), fdLimit())
	case cfg.FirstClient < 0:
		return fmt.Errorf("bad first client %d", cfg.FirstClient)
	case cfg.BodySize > 32<<10:
		return fmt.Errorf("body size %d is over 32 KiB", cfg.BodySize)
	case len(cfg.ServerEnv) > 0 && cfg.Target != "":
		return errors.New("the server environment is for servers this tool starts, not for a target")
	case len(cfg.ServerEnv) > 0 && (cfg.Scenario == "rebuild" || cfg.Scenario == "sequencer" || cfg.Scenario == "loopback"):
		return fmt.Errorf("%s starts no server to give the environment to", cfg.Scenario)
	}
	for _, kv := range cfg.ServerEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("server environment %q: want NAME=value", kv)
		}
	}
	return nil
}

func validScenario(s string) bool {
	for _, v := range Scenarios {
		if v == s {
			return true
		}
	}
	return false
}

// Result is what a run measured. Latencies are in milliseconds, rates per
// second, memory in KiB.
type Result struct {
	Scenario string   `json:"scenario"`
	Params   Params   `json:"params"`
	Machine  Machine  `json:"machine"`
	Started  string   `json:"started"` // RFC 3339
	OK       bool     `json:"ok"`      // no error
	Errors   []string `json:"errors,omitempty"`
	// ErrorCount counts every error; Errors holds the first ones.
	ErrorCount int64 `json:"error_count"`

	// Seconds is the measured phase's length; Rate is Count/Seconds of
	// Unit (e.g. "msgs/s").
	Seconds float64 `json:"seconds"`
	Count   int64   `json:"count"`
	Rate    float64 `json:"rate"`
	Unit    string  `json:"unit"`
	// Counts are the scenario's own counters (sent, acked, delivered…).
	Counts map[string]int64 `json:"counts,omitempty"`
	// Figures are the scenario's other measures (rss_per_conn_kib,
	// txcopy_rate, …).
	Figures map[string]float64 `json:"figures,omitempty"`

	// Latency is send → receive (from the intended send time when the
	// rate is fixed); AckLatency is send → ack.
	Latency    *Latency `json:"latency,omitempty"`
	AckLatency *Latency `json:"ack_latency,omitempty"`
	// Trend tells whether the deliveries kept up with the sends (dm and
	// group).
	Trend *Trend `json:"trend,omitempty"`
	// Timeline has one point per second of the measured phase.
	Timeline []Point `json:"timeline,omitempty"`
	// CPU is the cores used during the measured phase.
	CPU *CPU `json:"cpu,omitempty"`
}

// addError counts an error of the run, keeping the first ones.
func (r *Result) addError(msg string) {
	r.ErrorCount++
	if len(r.Errors) < keepErrors {
		r.Errors = append(r.Errors, msg)
	}
}

// Params are the parameters the run used.
type Params struct {
	Target     string  `json:"target,omitempty"`
	Partitions int     `json:"partitions,omitempty"`
	Clients    int     `json:"clients,omitempty"`
	Members    int     `json:"members,omitempty"`
	Senders    int     `json:"senders,omitempty"`
	Rate       float64 `json:"rate,omitempty"`
	Window     int     `json:"window,omitempty"`
	Duration   string  `json:"duration,omitempty"`
	Events     int     `json:"events,omitempty"`
	Convs      int     `json:"convs,omitempty"`
	BodySize   int     `json:"body_size,omitempty"`
	ServerArgs string  `json:"server_args,omitempty"`
	ServerEnv  string  `json:"server_env,omitempty"`
	// Processes is how many server processes, and as many client
	// processes, an idle run spread its connections over (0: one each).
	Processes int `json:"processes,omitempty"`
}

// Machine describes where the run ran.
type Machine struct {
	Cores     int    `json:"cores"`
	CPU       string `json:"cpu,omitempty"`
	MemoryMiB int64  `json:"memory_mib,omitempty"`
	Go        string `json:"go"`
	OS        string `json:"os"`
	// Speed is the machine's speed as the run began; nil if the probe
	// failed.
	Speed *Speed `json:"speed,omitempty"`
}

// Latency is a latency distribution, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Point is one second of a run: what was counted in it and, where the
// scenario measures latency, that second's percentiles.
type Point struct {
	T    float64 `json:"t"` // seconds since the measured phase began (end of the interval)
	Rate float64 `json:"rate"`
	P50  float64 `json:"p50,omitempty"`
	P99  float64 `json:"p99,omitempty"`
	Max  float64 `json:"max,omitempty"`
}

// CPU is the CPU time used during the measured phase, in cores (CPU
// seconds per second): by the server process (when this tool started it
// or knows it), by this tool, and by everything else on the machine; and
// the time a virtual machine's hypervisor gave its cores to others while
// they had work (steal). A run with much stolen time measured a slower
// machine than the one named.
type CPU struct {
	Server float64 `json:"server"`
	Bench  float64 `json:"bench"`
	Other  float64 `json:"other"`
	Stolen float64 `json:"stolen"`
}

// Run runs cfg's scenario. The error is for a run that could not be
// carried out at all; a run that ran but saw errors returns a Result with
// OK false.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = Defaults(cfg)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	res := &Result{
		Scenario: cfg.Scenario,
		Started:  time.Now().UTC().Format(time.RFC3339),
		Machine:  machine(),
		Params:   params(cfg),
		Counts:   map[string]int64{},
		Figures:  map[string]float64{},
	}
	if sp, err := measureSpeed(); err == nil {
		res.Machine.Speed = sp
	} else {
		cfg.Log.Warn("the machine's speed was not measured", "err", err)
	}
	var err error
	switch cfg.Scenario {
	case "dm":
		err = runDM(ctx, cfg, res)
	case "group":
		err = runGroup(ctx, cfg, res)
	case "idle":
		err = runIdle(ctx, cfg, res)
	case "catchup":
		err = runCatchup(ctx, cfg, res)
	case "rebuild":
		err = runRebuild(ctx, cfg, res)
	case "sequencer":
		err = runSequencer(ctx, cfg, res)
	case "loopback":
		err = runLoopback(ctx, cfg, res)
	}
	if err != nil {
		return nil, err
	}
	if res.Seconds > 0 {
		res.Rate = float64(res.Count) / res.Seconds
	}
	res.OK = res.ErrorCount == 0
	return res, nil
}

func params(cfg Config) Params {
	p := Params{Target: cfg.Target, Partitions: cfg.Partitions, ServerArgs: strings.Join(cfg.ServerArgs, " "), ServerEnv: strings.Join(cfg.ServerEnv, " ")}
	switch cfg.Scenario {
	case "dm":
		p.Clients, p.Rate, p.Window, p.Duration, p.BodySize = cfg.Clients, cfg.Rate, cfg.Window, cfg.Duration.String(), cfg.BodySize
	case "group":
		p.Members, p.Senders, p.Rate, p.Window, p.Duration, p.BodySize = cfg.Members, cfg.Senders, cfg.Rate, cfg.Window, cfg.Duration.String(), cfg.BodySize
	case "idle":
		p.Clients, p.Duration = cfg.Clients, cfg.Duration.String()
		if cfg.Target == "" && cfg.Clients > cfg.ConnsPerProcess {
			p.Processes = spreadProcesses(cfg)
		}
	case "catchup":
		p.Events, p.Convs, p.BodySize = cfg.Events, cfg.Convs, cfg.BodySize
	case "rebuild", "sequencer":
		p.Events, p.Convs = cfg.Events, cfg.Convs
	case "loopback":
		p.Clients, p.Rate, p.Duration, p.BodySize = cfg.Clients, cfg.Rate, cfg.Duration.String(), cfg.BodySize
		p.Partitions = 0 // no broker
	}
	if cfg.Scenario == "rebuild" || cfg.Scenario == "sequencer" || cfg.Scenario == "loopback" {
		p.ServerArgs = ""
	}
	return p
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kib, ok := meminfoKiB("MemTotal"); ok {
		m.MemoryMiB = kib / 1024
	}
	return m
}

// latency summarises a histogram of microseconds.
func latency(h interface {
	TotalCount() int64
	Mean() float64
	ValueAtQuantile(float64) int64
	Max() int64
}) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return &Latency{
		Count: h.TotalCount(), Mean: h.Mean() / 1000,
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
	}
}
