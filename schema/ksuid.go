package schema

import (
	"bufio"
	"crypto/rand"
	"sync"
	"time"

	"github.com/segmentio/ksuid"
)

// idRandom is the random part of new ids: crypto/rand, read 4 KiB at a
// time. Read one id at a time, it costs a getrandom system call per id,
// which showed as 6% of the server's CPU under load.
var idRandom = struct {
	sync.Mutex
	r *bufio.Reader
}{r: bufio.NewReaderSize(rand.Reader, 4096)}

// NewID returns a new KSUID as a string: a message id, or a client
// message or conversation id a client makes. It is ksuid.New, with the
// random bytes read in bulk.
func NewID() string {
	var payload [16]byte
	idRandom.Lock()
	// Peek and Discard rather than io.ReadFull, whose interface argument
	// would move payload to the heap.
	b, err := idRandom.r.Peek(len(payload))
	copy(payload[:], b)
	idRandom.r.Discard(len(b))
	idRandom.Unlock()
	if err != nil {
		// crypto/rand does not fail on the systems Go supports.
		return ksuid.New().String()
	}
	id, err := ksuid.FromParts(time.Now(), payload[:])
	if err != nil {
		return ksuid.New().String()
	}
	return id.String()
}
