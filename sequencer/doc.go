// Package sequencer is the single writer per conversation. It consumes
// parley.commands in a consumer group and, for each command, decides against
// the conversation's state: it assigns the next seq and appends an event,
// answers a retried (conv, from, cmid) with the original, or rejects the
// command with a reason. Events, the outcomes for waiting connectors, the
// changed per-conversation state (a compacted changelog) and the consumed
// offsets are written in one Kafka transaction (franz-go's
// GroupTransactSession). State is restored from the changelog when a
// partition is assigned. Partitions share no state, so the commands of a
// large transaction are decided on up to GOMAXPROCS goroutines, one
// partition's in log order on one goroutine.
//
// Guarantees: every command yields exactly one outcome and at most one event;
// per conversation, seqs run 1, 2, 3, ... with no gap and no duplicate,
// across crashes, restarts and rebalances; a retry with the same
// (conv, from, cmid) within the window yields the original. The window keeps
// every entry younger than WindowMinAge and the last WindowMinEntries entries
// of each conversation (both, whichever is larger); the edit/revoke window is
// the same.
//
// Not guaranteed: outcomes are delivered to a connector that is listening
// (it may have gone); a command whose record is undecodable gets no outcome
// (there is nowhere to send it) and is skipped with a log line and counted
// in parley_records_skipped_total (Config.Registerer).
//
// The commands topic must never gain partitions: a conversation's partition
// is its identity for the sequencer, and a command found on the wrong
// partition is rejected rather than risk two writers for one conversation.
package sequencer
