package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/parley-im/parley/bench"
)

const benchUsage = `usage: parley bench SCENARIO [flags]
scenarios:
  dm         clients in pairs, each pair a direct conversation, every client sending
  group      one group, every member online, some members sending
  idle       connections that only authenticate and keep alive; server memory per connection
  catchup    one device reconnecting to many missed events
  rebuild    the events topic replayed into an empty Pebble store
  sequencer  the sequencer against a plain transactional copy through the same broker; its restarts
  loopback   no Parley: the CPU of a frame over loopback TCP, each on a connection of its own
Without --target it starts 'parley dev' (this binary) on a fresh data dir.
`

// runBench is `parley bench`: the load tool.
func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, benchUsage)
		return errors.New("bench needs a scenario")
	}
	cfg := bench.Config{Scenario: args[0]}
	fs := newFlags("bench " + args[0])
	fs.StringVar(&cfg.Target, "target", "", "WebSocket URL of a running node (default: start parley dev)")
	fs.StringVar(&cfg.TokenSecret, "token-secret", "", "secret the target verifies tokens with (with --target)")
	serverArgs := fs.String("server-args", "", "extra flags for the parley dev it starts, space-separated")
	serverEnv := fs.String("server-env", "", "extra environment for the servers it starts, NAME=value, space-separated (GOGC=200, say); not for the tool itself")
	fs.IntVar(&cfg.Partitions, "partitions", 8, "partitions per topic")
	fs.IntVar(&cfg.Clients, "clients", 0, "dm: clients, in pairs (default 200); idle: connections (default 10000); loopback: connections (default 2000)")
	fs.IntVar(&cfg.Members, "members", 0, "group: members, all online (default 200)")
	fs.IntVar(&cfg.Senders, "senders", 0, "group: members that send (default 4)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "dm, group: messages per second in all (0: as fast as acks come back); loopback: frames per second in all (0: as fast as it can)")
	fs.IntVar(&cfg.Window, "window", 0, "dm, group: sends in flight per sender without --rate (default 4)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "dm, group, loopback: how long to send; idle: how long to hold the connections (default 10s)")
	fs.IntVar(&cfg.Events, "events", 0, "catchup (default 100000), rebuild and sequencer (default 200000): events to produce")
	fs.IntVar(&cfg.Convs, "convs", 0, "catchup (default 10), rebuild and sequencer (default 1000): conversations")
	fs.IntVar(&cfg.BodySize, "body-size", 0, "bytes of text in each message (default 32); loopback: a frame is 128 bytes more")
	fs.IntVar(&cfg.ConnsPerProcess, "conns-per-process", 0, "idle: connections one process holds; more are spread over several servers and client processes (default: the file descriptor hard limit less up to 1000; no limit: one process)")
	worker := fs.Bool("worker", false, "idle: be one client process of a spread run (the run starts these itself)")
	fs.IntVar(&cfg.FirstClient, "first-client", 0, "idle: number of the first connection (with --worker)")
	jsonOut := fs.String("json", "", "write the result as JSON to this file ('-': standard output, instead of the text)")
	plotOut := fs.String("plot", "", "draw the timeline into this .svg or .png file")
	markdown := fs.String("markdown", "", "append the result as a row of a markdown table to this file (with the table's header if the file is new)")
	quiet := fs.Bool("quiet", false, "no progress line")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file (the clients; and the broker, sequencer and store of rebuild and sequencer)")
	logger := logFlags(fs)
	fs.Lookup("log-level").DefValue = "error"
	_ = fs.Set("log-level", "error")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	cfg.Log = log
	cfg.ServerArgs = strings.Fields(*serverArgs)
	cfg.ServerEnv = strings.Fields(*serverEnv)
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if *worker {
		if cfg.Scenario != "idle" {
			return errors.New("--worker is for the idle scenario")
		}
		return bench.IdleWorker(ctx, cfg, os.Stdin, os.Stdout)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *jsonOut != "-" {
		bench.WriteText(os.Stdout, res)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		b = append(b, '\n')
		if *jsonOut == "-" {
			_, err = os.Stdout.Write(b)
		} else {
			err = os.WriteFile(*jsonOut, b, 0o644)
		}
		if err != nil {
			return err
		}
	}
	if *markdown != "" {
		if err := appendMarkdown(*markdown, res); err != nil {
			return err
		}
	}
	if *plotOut != "" {
		if len(res.Timeline) == 0 {
			// rebuild reports no progress while it runs; other runs may be
			// over within a second.
			fmt.Fprintf(os.Stderr, "parley bench: no plot: the %s run has no timeline\n", res.Scenario)
		} else if err := bench.Plot(res, *plotOut); err != nil {
			return err
		}
	}
	if !res.OK {
		return fmt.Errorf("the %s run failed its checks (%d errors)", res.Scenario, res.ErrorCount)
	}
	return nil
}

// appendMarkdown appends res as a table row to path, starting the table
// if the file is new or empty.
func appendMarkdown(path string, res *bench.Result) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil && st.Size() == 0 {
		_, err = fmt.Fprintln(f, bench.MarkdownHeader)
	}
	if err == nil {
		_, err = fmt.Fprintln(f, bench.MarkdownRow(res))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
