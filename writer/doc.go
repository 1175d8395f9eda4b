// Package writer persists the events topic into the timeline store. A
// consumer group on parley.events (read_committed) appends each poll's
// events to the store as one batch and commits the offsets only after the
// store has it, so a crash replays at most the uncommitted batch, which the
// store absorbs (writes are idempotent projections keyed by seq).
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
