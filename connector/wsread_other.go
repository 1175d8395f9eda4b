//go:build !linux

package connector

// readable: elsewhere the wait is left to the blocking read itself, which
// works the same but keeps the goroutine's stack while the client is quiet.
func (r *wsReader) readable(uintptr) bool { return true }
