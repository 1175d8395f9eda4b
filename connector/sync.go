package connector

import (
	"context"
	"sync"

	"github.com/parley-im/parley/schema"
)

// unreadCap bounds an unread count: counting stops there, and a client
// shows it as "1000+" (so sync's cost does not grow with a backlog).
const unreadCap = 1000

// Unread counts run at most unreadParallelism at once for one sync, and
// unreadNodeParallelism at once on the node, all syncs together.
const (
	unreadParallelism     = 64
	unreadNodeParallelism = 256
)

// conversationList returns every conversation user is a member of, ordered
// by id, with the unread count of each: message events by others after the
// user's read cursor, up to unreadCap.
func (g *Gateway) conversationList(ctx context.Context, user string) ([]schema.ConvJSON, error) {
	ucs, err := g.store.UserConversations(ctx, user)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx) // the first failure stops the rest
	defer cancel()
	out := make([]schema.ConvJSON, len(ucs))
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, unreadParallelism)
		errMu sync.Mutex
		first error
	)
	for i, uc := range ucs {
		out[i] = schema.ConvJSON{Conv: uc.Conv, Kind: schema.ConvKindName(uc.Kind), Title: uc.Title, LastSeq: uc.LastSeq, ReadSeq: uc.ReadSeq}
		if uc.ReadSeq >= uc.LastSeq {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		g.counts <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-g.counts; <-sem }()
			n, err := g.store.CountMessages(ctx, uc.Conv, uc.ReadSeq, uc.LastSeq, user, unreadCap)
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
				cancel()
				return
			}
			out[i].Unread = n
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return out, first
}

// syncReply is sync_ok: convs is always present.
type syncReply struct {
	Op    string            `json:"op"`
	ID    string            `json:"id,omitempty"`
	Convs []schema.ConvJSON `json:"convs"`
}

// sync answers every conversation the user is in.
func (s *session) sync(ctx context.Context, req *request) {
	convs, err := s.g.conversationList(ctx, s.user)
	if err != nil {
		s.g.log.Warn("sync failed", "user", s.user, "err", err)
		s.send(errorReply(req.ID, schema.CodeUnavailable, "the store is unavailable"))
		return
	}
	s.sendValue(syncReply{Op: "sync_ok", ID: req.ID, Convs: convs})
}
