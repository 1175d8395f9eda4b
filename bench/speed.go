package bench

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"time"
)

// Speed is how fast the machine was as the run began, before the run
// started anything: the time a small frame takes to go over loopback TCP
// to another goroutine and back (the system calls and wake-ups a chat
// message pays several times on its way), and how fast one core hashes
// (plain computing). A virtual machine's speed can drift between hours
// (by up to half on the one the README's figures come from); runs compare
// only at a similar speed.
type Speed struct {
	LoopbackRTTMicros float64 `json:"loopback_rtt_us"`
	SHA256MBPerSec    float64 `json:"sha256_mb_per_s"`
}

// speedProbeTime is how long each of the two probes runs.
const speedProbeTime = 200 * time.Millisecond

// measureSpeed probes the machine (Speed); it takes about twice
// speedProbeTime.
func measureSpeed() (*Speed, error) {
	rtt, err := loopbackRTT(speedProbeTime)
	if err != nil {
		return nil, err
	}
	return &Speed{LoopbackRTTMicros: float64(rtt) / float64(time.Microsecond), SHA256MBPerSec: hashRate(speedProbeTime)}, nil
}

// loopbackRTT returns the mean time a 64-byte message takes to go to an
// echoing goroutine over loopback TCP and back, over about d.
func loopbackRTT(d time.Duration) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	echoed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				echoed <- nil // the prober closed
				return
			}
			if _, err := c.Write(buf); err != nil {
				echoed <- err
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	_ = c.SetDeadline(time.Now().Add(d + 10*time.Second))
	msg, back := make([]byte, 64), make([]byte, 64)
	n, start := 0, time.Now()
	for ; n == 0 || time.Since(start) < d; n++ {
		if _, err := c.Write(msg); err != nil {
			c.Close()
			return 0, fmt.Errorf("loopback probe: %w", err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			c.Close()
			return 0, fmt.Errorf("loopback probe: %w", err)
		}
	}
	took := time.Since(start)
	c.Close()
	if err := <-echoed; err != nil {
		return 0, fmt.Errorf("loopback probe echo: %w", err)
	}
	return took / time.Duration(n), nil
}

// hashRate returns how many MB (10^6 bytes) a second one goroutine hashes
// with SHA-256, over about d.
func hashRate(d time.Duration) float64 {
	buf := make([]byte, 64<<10)
	n, start := 0, time.Now()
	for n == 0 || time.Since(start) < d {
		sha256.Sum256(buf)
		n += len(buf)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}
