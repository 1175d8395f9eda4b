// Package writer persists the events topic into the timeline store. A
// consumer group on parley.events (read_committed) appends each poll's
// events to the store as one batch and commits the offsets only after the
// store has it, so a crash replays at most the uncommitted batch, which the
// store absorbs (writes are idempotent projections keyed by seq).
//
// Rebuild replays the whole events topic into a store without a group.
package writer
