// Package writer persists the events topic into the timeline store. A
// consumer group on parley.events (read_committed) appends each poll's
// events to the store as one batch, and marks its offsets for commit only
// once the store has it. Marked offsets are committed every
// Config.CommitInterval (1 s), before a rebalance takes partitions away,
// and when the writer stops (kafka.MarkedCommits). A crash replays what
// was stored since the last commit, which the store absorbs (writes are
// idempotent projections keyed by seq).
//
// A record that is undecodable, malformed (schema.DecodeEvent) or does not
// continue its conversation (schema.SkipOutOfSequence) is skipped, logged
// and counted in parley_records_skipped_total (Config.Registerer): it would
// fail the same way on every try. Every other event is one the store can
// hold, so a store error is an outage, retried until the store takes the
// batch.
//
// Rebuild replays the whole events topic into a store without a group.
package writer
