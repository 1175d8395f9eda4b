// Package chaos holds the chaos run: a multi-process Parley cluster on
// loopback (a three-broker embedded Kafka, two of each role as child
// processes, a Cassandra node of its own), 200 clients sending through both
// connectors, a fault loop driven by a logged seed, and a checker that
// trusts only what the clients saw and what the log and the store hold.
//
// The run is a test: `go test ./chaos` runs the short one with a fixed seed
// (the README's test command includes it); scripts/chaos runs a longer one.
// Its settings come from the environment:
//
//	PARLEY_CHAOS_DURATION  how long clients send under faults (default 90s)
//	PARLEY_CHAOS_SEED      the seed of the fault loop (default 1)
//	PARLEY_CHAOS_CLIENTS   client connections, two per user (default 200)
//	PARLEY_CHAOS_FAULTS    the kinds of fault to inject, comma-separated
//	                       (default all: kill, drain, broker-error,
//	                       broker-slow, leadership, cassandra-stop)
//	PARLEY_CHAOS_REPORT    a file to write the report to, as JSON (default none)
//
// The checker's rules, each counted as a violation when broken:
//   - every acknowledged (conv, from, cmid) is in the log exactly once, at
//     the acknowledged seq; no cmid is in the log twice;
//   - every conversation's seqs are 1..n, with no gap and no duplicate;
//   - every device delivered each of its conversations in seq order, once
//     each, and up to the end (pushes and history together);
//   - what a device delivered equals the log;
//   - the store holds exactly the log's events;
//   - no device got an event of a conversation its user was not a member of
//     at that seq.
package chaos
