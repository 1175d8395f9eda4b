package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/auth"
	"github.com/parley-im/parley/client"
)

// delivery is one event a device delivered, and when.
type delivery struct {
	ev client.Event
	at time.Time
}

// device is one client connection and everything it delivered.
type device struct {
	name string
	user string
	c    *client.Client

	mu   sync.Mutex
	got  map[string][]delivery // per conversation, in delivery order
	done chan struct{}
}

func (d *device) delivered(conv string) []delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got[conv])
}

// send is one message a client sent, and what came of it.
type send struct {
	conv, from, cmid string
	at               time.Time
	acked            bool
	seq              int64
	err              error
}

// load is the clients and their traffic.
type load struct {
	t       *testing.T
	users   []string
	devices []*device
	byUser  map[string][]*device

	// Conversations: every user is in one direct conversation and one
	// group of the static set; churn is a group whose members come and go.
	static  []string
	convsOf map[string][]string // user → static conversations
	churn   string
	joiners []string // users added to churn over the run, in order
	leavers []string // users removed from churn over the run, in order

	mu    sync.Mutex
	sends []*send

	memberOps atomic.Int64
}

func quietClientLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// startLoad dials clients devices (two per user, one on each connector
// first) and creates the conversations.
func startLoad(t *testing.T, c *cluster, clients int) *load {
	t.Helper()
	l := &load{t: t, byUser: map[string][]*device{}, convsOf: map[string][]string{}}
	nUsers := max(clients/2, 40)
	for i := range nUsers {
		l.users = append(l.users, fmt.Sprintf("u%03d", i))
	}
	urls := []string{"ws://" + c.public[0] + "/v1/ws", "ws://" + c.public[1] + "/v1/ws"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	sem := make(chan struct{}, 32)
	for i, u := range l.users {
		for j, name := range []string{"a", "b"} {
			d := &device{name: u + "/" + name, user: u, got: map[string][]delivery{}, done: make(chan struct{})}
			l.devices = append(l.devices, d)
			l.byUser[u] = append(l.byUser[u], d)
			first := (i + j) % 2
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cl, err := client.Dial(ctx, client.Config{
					URLs:   []string{urls[first], urls[1-first]},
					Device: name,
					Token: func(context.Context) (string, error) {
						return auth.Sign([]byte(tokenSecret), u, 24*time.Hour, time.Now())
					},
					MinBackoff: 50 * time.Millisecond,
					MaxBackoff: time.Second,
					Logger:     quietClientLogger(),
				})
				if err != nil {
					mu.Lock()
					dialErr = fmt.Errorf("%s: %w", d.name, err)
					mu.Unlock()
					return
				}
				d.c = cl
				go d.read()
			}()
		}
	}
	wg.Wait()
	if dialErr != nil {
		t.Fatal(dialErr)
	}
	t.Cleanup(l.close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	creator := func(u string) *client.Client { return l.byUser[u][0].c }
	// Direct conversations in pairs; groups of ten, members spread out.
	for i := 0; i+1 < nUsers; i += 2 {
		a, b := l.users[i], l.users[i+1]
		conv, err := creator(a).Create(ctx, "direct", []string{b}, "")
		if err != nil {
			t.Fatalf("create direct %s-%s: %v", a, b, err)
		}
		l.static = append(l.static, conv)
		l.convsOf[a] = append(l.convsOf[a], conv)
		l.convsOf[b] = append(l.convsOf[b], conv)
	}
	groups := nUsers / 10
	for g := range groups {
		var members []string
		for i := g; i < nUsers; i += groups {
			members = append(members, l.users[i])
		}
		conv, err := creator(members[0]).Create(ctx, "group", members[1:], fmt.Sprintf("group %d", g))
		if err != nil {
			t.Fatalf("create group %d: %v", g, err)
		}
		l.static = append(l.static, conv)
		for _, u := range members {
			l.convsOf[u] = append(l.convsOf[u], conv)
		}
	}
	// The churn group: its owner and the first third of the users; the
	// next third joins one at a time over the run while the first leaves.
	third := nUsers / 3
	owner := l.users[0]
	initial := l.users[1:third]
	l.joiners = slices.Clone(l.users[third : 2*third])
	l.leavers = slices.Clone(initial)
	var err error
	if l.churn, err = creator(owner).Create(ctx, "group", initial, "churn"); err != nil {
		t.Fatalf("create the churn group: %v", err)
	}
	// Every device delivers its conversations from seq 1.
	for _, d := range l.devices {
		for _, conv := range l.convsOf[d.user] {
			d.c.Track(conv, 0)
		}
		if d.user == owner || slices.Contains(initial, d.user) {
			d.c.Track(l.churn, 0)
		}
	}
	return l
}

// read records what the device delivers until the client closes.
func (d *device) read() {
	defer close(d.done)
	for ev := range d.c.Events() {
		d.mu.Lock()
		d.got[ev.Conv] = append(d.got[ev.Conv], delivery{ev: ev, at: time.Now()})
		d.mu.Unlock()
	}
}

// run sends from every device until ctx ends: each device sends about
// rate messages a second, one at a time, to one of its user's static
// conversations; the owner of the churn group changes its members every
// churnEvery. It returns when every send has an answer or gave up.
func (l *load) run(ctx context.Context, seed uint64, rate float64, churnEvery time.Duration) {
	var wg sync.WaitGroup
	for i, d := range l.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			convs := l.convsOf[d.user]
			for n := 0; ; n++ {
				// Exponential gaps, so senders do not march in step.
				pause := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
				s := &send{conv: convs[rng.IntN(len(convs))], from: d.user, cmid: fmt.Sprintf("%s-%d", d.name, n), at: time.Now()}
				sctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
				ack, err := d.c.SendCMID(sctx, s.conv, s.cmid, "text", map[string]any{"n": n, "from": d.name})
				cancel()
				if err == nil {
					s.acked, s.seq = true, ack.Seq
				} else {
					s.err = err
				}
				l.mu.Lock()
				l.sends = append(l.sends, s)
				l.mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		owner := l.byUser[l.users[0]][0].c
		tick := time.NewTicker(churnEvery)
		defer tick.Stop()
		for i := 0; i < len(l.joiners) && i < len(l.leavers); i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			err := owner.Members(mctx, l.churn, []string{l.joiners[i]}, []string{l.leavers[i]})
			cancel()
			if err != nil {
				l.t.Logf("churn: adding %s and removing %s: %v", l.joiners[i], l.leavers[i], err)
			}
			l.memberOps.Add(1)
		}
	}()
	wg.Wait()
}

// close disconnects every device and waits until each has delivered its
// last event: what they delivered holds still from then on.
func (l *load) close() {
	for _, d := range l.devices {
		d.c.Close()
		<-d.done
	}
}

// catchUp brings every device up to date with what sync reports.
func (l *load) catchUp(timeout time.Duration) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(l.devices))
	sem := make(chan struct{}, 32)
	// One deadline for them all: devices that cannot catch up fail the run
	// after timeout, not after timeout for each batch of 32 of them.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for i, d := range l.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := d.c.CatchUp(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: catch-up: %w", d.name, err)
			}
		}()
	}
	wg.Wait()
	return errs
}

// stats returns every device's client counters.
func (l *load) stats() []client.Stats {
	out := make([]client.Stats, len(l.devices))
	for i, d := range l.devices {
		out[i] = d.c.Stats()
	}
	return out
}
