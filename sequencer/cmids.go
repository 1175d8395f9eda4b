package sequencer

import (
	"hash/maphash"
	"strings"
)

// cmidKey is what a client's retry repeats: its sender and cmid.
type cmidKey struct{ from, cmid string }

// cmidIndex finds the window entry of a cmidKey: the dedup lookup of every
// command with a cmid. The window it indexes only moves forward: entries
// come in seq order and leave oldest first, a chunk at a time. A map from
// key to entry, deleted from as entries left, took about a third of
// deciding a command once windows were full: each delete left a tombstone
// that later lookups probed past, the map regrew to shed them, and every
// lookup, though nearly all miss, hashed both strings.
//
// So the index never deletes. It maps a 64-bit hash of the key to the
// entry's seq, in two generations: entries go into cur, and once the
// window's start passes the last seq in prev, prev is cleared and becomes
// the new cur (see advance). A lookup takes the seq it finds only if the
// window still has an entry of that seq with the key, since keys may share
// a hash. The rare key whose hash a live entry of another key holds in
// cur is kept by its whole key in clash.
//
// An entry that left the window is never found, as before: a retry older
// than the window is sequenced again.
type cmidIndex struct {
	cur, prev map[uint64]int64
	curLast   int64 // the last seq put in cur (prevLast's if none since the swap)
	prevLast  int64 // the highest seq in prev
	clash     map[cmidKey]int64
}

// cmidHash hashes a key for cmidIndex; tests replace it to make keys
// share hashes.
var cmidHash = func(k cmidKey) uint64 { return maphash.Comparable(cmidSeed, k) }

var cmidSeed = maphash.MakeSeed()

// findCmid returns the window entry of from's cmid.
func (c *convState) findCmid(from, cmid string) (winRef, bool) {
	x, k := &c.cmids, cmidKey{from, cmid}
	h := cmidHash(k)
	if r, ok := c.cmidEntry(x.cur, h, k); ok {
		return r, true
	}
	if r, ok := c.cmidEntry(x.prev, h, k); ok {
		return r, true
	}
	if seq, ok := x.clash[k]; ok {
		return c.entry(seq) // none once it left the window
	}
	return winRef{}, false
}

// cmidEntry is the window entry that m's seq for hash h points at, if
// there is one and it has key k.
func (c *convState) cmidEntry(m map[uint64]int64, h uint64, k cmidKey) (winRef, bool) {
	seq, ok := m[h]
	if !ok {
		return winRef{}, false
	}
	if r, ok := c.entry(seq); ok && r.hasKey(k) {
		return r, true
	}
	return winRef{}, false
}

// hasKey reports whether the entry's sender and cmid are k's.
func (r winRef) hasKey(k cmidKey) bool {
	_, cmid, from := r.ids()
	return string(from) == k.from && string(cmid) == k.cmid
}

// indexCmid adds the entry of seq, whose key is k, to the index. The entry
// is already in the window; k's strings may share memory that changes
// later (a record's): a key kept is copied.
func (c *convState) indexCmid(seq int64, k cmidKey) {
	x := &c.cmids
	h := cmidHash(k)
	if x.cur == nil {
		x.cur = make(map[uint64]int64)
	}
	if old, ok := x.cur[h]; ok {
		if o, ok := c.entry(old); ok && !o.hasKey(k) {
			if x.clash == nil {
				x.clash = make(map[cmidKey]int64)
			}
			x.clash[cmidKey{strings.Clone(k.from), strings.Clone(k.cmid)}] = seq
			return
		}
	}
	x.cur[h] = seq
	x.curLast = seq
}

// advance lets go of what left the window, which now starts at start.
func (x *cmidIndex) advance(start int64) {
	for k, seq := range x.clash {
		if seq < start {
			delete(x.clash, k)
		}
	}
	if len(x.clash) == 0 {
		x.clash = nil
	}
	if start <= x.prevLast {
		return // prev still has entries in the window
	}
	// Nothing in prev is in the window: its map, cleared, takes the
	// entries to come, and cur's become the older generation.
	clear(x.prev)
	x.prev, x.cur = x.cur, x.prev
	x.prevLast = x.curLast
}
