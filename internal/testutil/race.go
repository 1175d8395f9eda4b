//go:build race

package testutil

// Race reports whether the tests were built with the race detector. Its
// sync.Pool drops objects at random, so allocation counts that depend on a
// pool are exact only without it.
const Race = true
