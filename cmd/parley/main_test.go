package main

import (
	"testing"
)

func TestFlagsFromEnv(t *testing.T) {
	fs := newFlags("test")
	dataDir := fs.String("data-dir", "default", "")
	listen := fs.String("broker-listen", "default", "")
	n := fs.Int("partitions", 1, "")
	t.Setenv("PARLEY_DATA_DIR", "/from/env")
	t.Setenv("PARLEY_BROKER_LISTEN", "127.0.0.1:1")
	if err := parse(fs, []string{"--broker-listen", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if *dataDir != "/from/env" || *listen != "127.0.0.1:2" || *n != 1 {
		t.Fatalf("data-dir %q, broker-listen %q, partitions %d: env applies, the command line wins", *dataDir, *listen, *n)
	}

	fs = newFlags("test")
	fs.Int("partitions", 1, "")
	t.Setenv("PARLEY_PARTITIONS", "many")
	if err := parse(fs, nil); err == nil {
		t.Fatal("a bad PARLEY_PARTITIONS was accepted")
	}
	fs = newFlags("test")
	if err := parse(fs, []string{"stray"}); err == nil {
		t.Fatal("a stray argument was accepted")
	}
}
