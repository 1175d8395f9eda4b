package connector

// ReadBuffersHeld is how many read buffers sessions hold (wsread.go).
func ReadBuffersHeld() int64 { return readBufsHeld.Load() }
