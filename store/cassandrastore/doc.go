// Package cassandrastore is the timeline store on Apache Cassandra (or
// ScyllaDB), for scale-out deployments, through the gocql driver.
//
// The schema is schema/cql (applied by Migrate / `parley migrate`). Events
// are partitioned by (conv, bucket) with bucket = seq / BucketSize, so a
// reader computes the partition of any seq and a partition stays small.
// Every write is idempotent without reading first: events are keyed by seq,
// and every derived cell is written USING TIMESTAMP of the seq of the event
// that set it, so the latest event wins whatever order replays arrive in.
// Writes of one partition are grouped into unlogged batches; nothing uses
// lightweight transactions, and nothing writes nulls or deletes.
//
// Tested against Apache Cassandra 2.1.0 (the version the test script
// starts). The CQL stays within what 2.1 accepts, and batches within the
// 50 KiB that some later versions enforce, so that it should run unchanged
// on Cassandra 3, 4, 5 and ScyllaDB; those were not tested.
package cassandrastore
