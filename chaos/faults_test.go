package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The kinds of fault the loop injects.
const (
	faultKill       = "kill"           // SIGKILL a role process, start it again
	faultDrain      = "drain"          // SIGTERM a connector (it drains), start it again
	faultBrokerErr  = "broker-error"   // the brokers answer some requests with an error
	faultSlow       = "broker-slow"    // the brokers answer some requests late
	faultLeadership = "leadership"     // partition leaders or coordinators move
	faultCassandra  = "cassandra-stop" // Cassandra is killed and started again
)

var faultKinds = []string{faultKill, faultDrain, faultBrokerErr, faultSlow, faultLeadership, faultCassandra}

// disruption is a moment a role process went away, for the recovery figure.
type disruption struct {
	at   time.Time
	what string
}

// faults injects faults into c, one at a time, chosen by a seeded random
// source; every choice is logged so a run can be read back.
type faults struct {
	t      *testing.T
	kinds  []string
	c      *cluster
	rng    *rand.Rand
	counts map[string]int
	log    []string
	gone   []disruption
	start  time.Time
}

func newFaults(t *testing.T, c *cluster, seed uint64, kinds []string) *faults {
	return &faults{t: t, kinds: kinds, c: c, rng: rand.New(rand.NewPCG(seed, 0xc4a05)), counts: map[string]int{}, start: time.Now()}
}

func (f *faults) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.1fs ", time.Since(f.start).Seconds()) + fmt.Sprintf(format, args...)
	f.log = append(f.log, line)
	f.t.Log("fault: " + line)
}

// run injects faults until ctx ends. It runs on the test's goroutine (it
// may fail the test). The first faults go through every kind once, in a
// seeded order, so that even a short run has each.
func (f *faults) run(ctx context.Context) {
	order := f.rng.Perm(len(f.kinds))
	for i := 0; ; i++ {
		pause := 2*time.Second + time.Duration(f.rng.Int64N(int64(3*time.Second)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		kind := f.kinds[f.rng.IntN(len(f.kinds))]
		if i < len(order) {
			kind = f.kinds[order[i]]
		}
		f.counts[kind]++
		switch kind {
		case faultKill:
			f.kill()
		case faultDrain:
			f.drain()
		case faultBrokerErr:
			f.brokerErrors()
		case faultSlow:
			f.slow()
		case faultLeadership:
			f.leadership()
		case faultCassandra:
			f.cassandra()
		}
	}
}

// pause waits d (the fault loop's own pacing).
func pause(d time.Duration) { <-time.After(d) }

func (f *faults) kill() {
	p := f.c.procs[f.rng.IntN(len(f.c.procs))]
	down := 200*time.Millisecond + time.Duration(f.rng.Int64N(int64(2*time.Second)))
	f.logf("SIGKILL %s, start again after %v", p.name, down.Round(time.Millisecond))
	f.gone = append(f.gone, disruption{at: time.Now(), what: "SIGKILL " + p.name})
	p.kill()
	pause(down)
	p.start()
}

func (f *faults) drain() {
	p := f.c.procs[len(f.c.procs)-2+f.rng.IntN(2)] // the connectors come last
	f.logf("SIGTERM %s (drain), start again once it exits", p.name)
	f.gone = append(f.gone, disruption{at: time.Now(), what: "SIGTERM " + p.name})
	start := time.Now()
	p.signal(syscall.SIGTERM, 30*time.Second)
	f.logf("%s exited %v after SIGTERM", p.name, time.Since(start).Round(time.Millisecond))
	p.start()
}

// brokerErrs are the requests the brokers fail, each with the errors a
// real cluster answers them with.
var brokerErrs = []struct {
	key  kmsg.Key
	errs []*kerr.Error
}{
	{kmsg.Produce, []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas}},
	{kmsg.Fetch, []*kerr.Error{kerr.NotLeaderForPartition, kerr.UnknownLeaderEpoch}},
	{kmsg.OffsetCommit, []*kerr.Error{kerr.CoordinatorNotAvailable, kerr.NotCoordinator, kerr.RequestTimedOut}},
	{kmsg.TxnOffsetCommit, []*kerr.Error{kerr.CoordinatorLoadInProgress, kerr.NotCoordinator}},
	{kmsg.AddPartitionsToTxn, []*kerr.Error{kerr.ConcurrentTransactions, kerr.CoordinatorNotAvailable}},
	{kmsg.AddOffsetsToTxn, []*kerr.Error{kerr.ConcurrentTransactions, kerr.NotCoordinator}},
	{kmsg.EndTxn, []*kerr.Error{kerr.ConcurrentTransactions, kerr.NotCoordinator, kerr.CoordinatorNotAvailable}},
	{kmsg.Heartbeat, []*kerr.Error{kerr.RebalanceInProgress}},
}

func (f *faults) brokerErrors() {
	b := brokerErrs[f.rng.IntN(len(brokerErrs))]
	err := b.errs[f.rng.IntN(len(b.errs))]
	n := 1 + f.rng.IntN(20)
	f.logf("the brokers fail the next %d %s requests with %s", n, b.key.Name(), err.Message)
	f.c.kf.Fault(kfake.Fault{Keys: []kmsg.Key{b.key}, Err: err, Count: n})
}

var slowKeys = []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.EndTxn, kmsg.OffsetCommit, kmsg.TxnOffsetCommit, kmsg.JoinGroup}

func (f *faults) slow() {
	key := slowKeys[f.rng.IntN(len(slowKeys))]
	n := int64(1 + f.rng.IntN(30))
	delay := 100*time.Millisecond + time.Duration(f.rng.Int64N(int64(1500*time.Millisecond)))
	until := time.Now().Add(20 * time.Second)
	f.logf("the brokers answer the next %d %s requests %v late", n, key.Name(), delay.Round(time.Millisecond))
	var left atomic.Int64
	left.Store(n)
	kf := f.c.kf
	kf.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		if left.Add(-1) < 0 || time.Now().After(until) {
			kf.DropControl()
			return nil, nil, false
		}
		kf.SleepControl(func() { pause(delay) })
		return nil, nil, false // then answered as usual
	})
}

func (f *faults) leadership() {
	switch f.rng.IntN(3) {
	case 0:
		// Every leader epoch moves on. A consumer that asks about the
		// epoch it consumed at before anything is written at the new one
		// is told the broker does not know it, and goes back to the start
		// of the partition: the roles must not act twice on what they
		// read again (each skips what it handled: kafka.Replays).
		f.logf("every partition gets a new leader")
		f.c.kf.ShufflePartitionLeaders()
	case 1:
		topics := f.c.kc.Topics()
		names := []string{topics.Commands, topics.Events, topics.Outcomes, topics.SequencerState, topics.Presence}
		topic := names[f.rng.IntN(len(names))]
		p := int32(f.rng.IntN(partitions))
		node := int32(f.rng.IntN(3))
		f.logf("partition %s/%d moves to broker %d", topic, p, node)
		if err := f.c.kf.MoveTopicPartition(topic, p, node); err != nil {
			f.logf("moving %s/%d: %v", topic, p, err)
		}
	default:
		f.logf("group and transaction coordinators move")
		f.c.kf.RehashCoordinators()
	}
}

func (f *faults) cassandra() {
	down := time.Second + time.Duration(f.rng.Int64N(int64(3*time.Second)))
	f.logf("SIGKILL Cassandra, start it again after %v", down.Round(time.Millisecond))
	start := time.Now()
	f.c.cass.Kill()
	pause(down)
	f.c.cass.Restart()
	f.logf("Cassandra answers again, %v after the kill", time.Since(start).Round(time.Millisecond))
}
