package testutil

import (
	"bytes"
	"strings"
	"sync"
)

// SyncBuffer collects what goroutines write (a logger's lines, a command's
// output) for a test to read while they go on.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lines returns what was written so far, split at newlines.
func (s *SyncBuffer) Lines() []string { return strings.Split(s.String(), "\n") }
