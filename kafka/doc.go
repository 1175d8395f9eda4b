// Package kafka is Parley's plumbing on franz-go: client options from
// configuration, topic creation, the partitioner every role agrees on,
// reading a partition up to its last stable offset, and the offset commits
// of the consumers that mark what they have finished (MarkedCommits). Roles build their own
// clients from Config.ClientOpts; nothing here holds a global client.
package kafka
