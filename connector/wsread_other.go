//go:build !linux

package connector

// useRawReads: elsewhere the wait is left to the blocking read itself, which
// works the same but keeps the goroutine's stack and a buffer while the
// client is quiet.
func (r *wsReader) useRawReads() {}
