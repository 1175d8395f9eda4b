// Package e2e holds the end-to-end tests of the pipeline: commands produced
// to a real (embedded, kfake) broker over TCP, the sequencer and writer
// in-process or as child processes of the parley binary, and checks of the
// invariants against what the log, the outcomes and the store hold.
package e2e
