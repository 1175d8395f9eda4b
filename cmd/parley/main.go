// Command parley is Parley's one binary. With no arguments it runs
// everything on this machine (parley dev); with a role name it runs that
// role against a cluster. Every flag can also be set by the environment
// variable PARLEY_<FLAG> (upper case, dashes as underscores); a flag given
// on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: parley [command] [flags]

commands:
  dev        everything in one process: embedded broker, embedded store, all roles (default)
  sequencer  run the sequencer role against --brokers
  writer     run the writer role against --brokers into a store
  connector  run the WebSocket gateway and push endpoint against --brokers
  fanout     run the fanout role against --brokers: push events to the connectors
  tap        print the events topic as JSON lines
  rebuild    replay the events topic into an empty store
  migrate    create or update the Cassandra keyspace and tables
  token      print a client token for --user
  bench      the load tool: run a scenario and report throughput and latency

Run 'parley <command> -h' for a command's flags.
`

func main() {
	args := os.Args[1:]
	cmd := "dev"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "dev":
		err = runDev(ctx, args)
	case "sequencer":
		err = runSequencer(ctx, args)
	case "writer":
		err = runWriter(ctx, args)
	case "tap":
		err = runTap(ctx, args)
	case "rebuild":
		err = runRebuild(ctx, args)
	case "token":
		err = runToken(args)
	case "migrate":
		err = runMigrate(ctx, args)
	case "connector":
		err = runConnector(ctx, args)
	case "fanout":
		err = runFanout(ctx, args)
	case "bench":
		err = runBench(ctx, args)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", cmd, usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}

// newFlags returns a flag set for a command.
func newFlags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("parley "+cmd, flag.ContinueOnError)
	return fs
}

// parse applies PARLEY_<FLAG> environment variables to fs, then args.
func parse(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "PARLEY_" + envName(f.Name)
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}

func envName(flagName string) string {
	b := []byte(flagName)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// logFlags adds --log-level and --log-format and returns a function that
// builds the logger from them.
func logFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	return func() (*slog.Logger, error) {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("--log-level: %w", err)
		}
		opts := &slog.HandlerOptions{Level: lv}
		switch *format {
		case "text":
			return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
		}
		return nil, fmt.Errorf("--log-format must be text or json, not %q", *format)
	}
}
