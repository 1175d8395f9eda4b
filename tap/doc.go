// Package tap prints the events topic as JSON lines, one event per line in
// the client protocol's event form, for people and for analytics scripts.
//
// With no filter it prints every committed event from the start of each
// partition. Filters narrow that down: by conversation (only the partitions
// holding those conversations are read), by event type, and by where each
// partition starts (an offset, or the first record written at or after a
// time, found with Kafka's offsets-by-timestamp).
package tap
