// Package schema holds Parley's contract with everything outside a role: the
// Kafka topic names, the identifier rules, the mapping from rejection reasons
// to client error codes, and the JSON form of an event that clients and the
// tap see. The record formats themselves are the protobuf files in
// schema/parley/v1 (generated Go in package parleyv1); README.md in this
// folder documents every topic, key and record.
package schema
