package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The loopback scenario measures the machine's floor for messaging, with
// no Parley in it: the CPU that carrying one frame over loopback TCP takes
// (the write, the kernel's delivery, the reader's wake-up and read) when
// every frame has a connection to itself, as frames to different clients
// do. A dm message is four such frames between the tool and the server
// (the send, its ack, and the pushes to the other client and to the
// sender's own device), which coalesce only when several wait for one
// connection at once: cores / (4 × the CPU of a frame) bounds the dm rate
// of smooth traffic the machine could carry if it did nothing else.

// dmFrames is the frames a dm message makes between the tool and the
// server: the send, its ack, and two pushes.
const dmFrames = 4

// loopbackHeader is the bytes of a loopback frame besides its body:
// about what a dm frame carries besides its message's text.
const loopbackHeader = 128

// loopbackFrame is one frame: its number on its connection, when it was
// meant to be sent (ns since the run's start), then filler.
func loopbackFrame(b []byte, seq uint64, at int64) {
	binary.LittleEndian.PutUint64(b[0:], seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(at))
}

// frameReader takes one connection's stream apart into frames of size
// bytes and checks that their numbers run 0, 1, 2, …
type frameReader struct {
	size    int
	pending []byte // the start of a frame not yet whole
	next    uint64 // the number the next frame must have
}

// take consumes b and calls frame for each whole frame with its send time.
func (r *frameReader) take(b []byte, frame func(at int64)) error {
	for len(b) > 0 {
		var f []byte
		switch {
		case len(r.pending) > 0 || len(b) < r.size:
			n := min(r.size-len(r.pending), len(b))
			r.pending = append(r.pending, b[:n]...)
			b = b[n:]
			if len(r.pending) < r.size {
				return nil
			}
			f, r.pending = r.pending, r.pending[:0]
		default:
			f, b = b[:r.size], b[r.size:]
		}
		if seq := binary.LittleEndian.Uint64(f); seq != r.next {
			return fmt.Errorf("frame %d came where %d was due", seq, r.next)
		}
		r.next++
		frame(int64(binary.LittleEndian.Uint64(f[8:])))
	}
	return nil
}

// runLoopback opens cfg.Clients loopback TCP connections and, for
// cfg.Duration, writes frames of loopbackHeader + cfg.BodySize bytes on
// them in turn, one write a frame: cfg.Rate frames/s in all, spread
// evenly, or as fast as GOMAXPROCS writers can. Readers check every frame
// and record its latency from the time it was meant to be sent.
func runLoopback(ctx context.Context, cfg Config, res *Result) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	size := loopbackHeader + cfg.BodySize
	accepted := make(chan net.Conn, cfg.Clients)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var conns []net.Conn // the writing ends
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range cfg.Clients {
		d := &net.Dialer{Timeout: 10 * time.Second}
		if k := i / portsPerSource; k > 0 {
			d.LocalAddr, d.Control = sourceAddr(k), bindNoPort
		}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}

	rec := newRecorder()
	received := make([]atomic.Uint64, cfg.Clients)
	var readers sync.WaitGroup
	defer readers.Wait()
	base := time.Now() // frames carry their send times as offsets from it
	for i := range cfg.Clients {
		var c net.Conn
		select {
		case c = <-accepted:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%d of %d connections accepted", i, cfg.Clients)
		}
		defer c.Close()
		readers.Go(func() {
			r := frameReader{size: size}
			buf := make([]byte, 16<<10)
			// Accepted ends come in no particular order: each reader checks
			// its own connection's frames, and the totals are compared at
			// the end.
			for {
				n, err := c.Read(buf)
				now := time.Since(base)
				if n > 0 {
					if ferr := r.take(buf[:n], func(at int64) {
						rec.record(i, base.Add(now), now-time.Duration(at))
					}); ferr != nil {
						rec.errs.add(fmt.Sprintf("connection %d: %v", i, ferr))
						return
					}
					received[i].Store(r.next)
				}
				if err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
						rec.errs.add(fmt.Sprintf("connection %d: %v", i, err))
					}
					return
				}
			}
		})
	}

	writers := 1
	if cfg.Rate <= 0 {
		writers = min(runtime.GOMAXPROCS(0), cfg.Clients)
	}
	sent := make([]uint64, cfg.Clients) // each connection's frames, by its writer
	var writeErr atomic.Pointer[error]
	start := time.Now()
	prog := newProgress(cfg, start, rec, nil)
	cpu := startCPU(nil)
	first, end := start.Sub(base), start.Add(cfg.Duration).Sub(base)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			buf := make([]byte, size)
			for k := 0; ctx.Err() == nil; k++ {
				// Writer w takes connections w, w+writers, …; paced, the
				// one writer sends frame k k/Rate seconds after the start.
				i := w + k%((cfg.Clients-w+writers-1)/writers)*writers
				at := time.Since(base)
				if cfg.Rate > 0 {
					at = first + time.Duration(float64(k)*float64(time.Second)/cfg.Rate)
					if d := at - time.Since(base); d > time.Millisecond {
						time.Sleep(d) // frames due within the next ms go at once
					}
				}
				if at >= end {
					return
				}
				// Stamped with when it was due, or when it goes if that is
				// earlier: latency counts from the due time when a frame is
				// late, and never from before it was written.
				loopbackFrame(buf, sent[i], int64(max(at, time.Since(base))))
				if _, err := conns[i].Write(buf); err != nil {
					writeErr.CompareAndSwap(nil, &err)
					return
				}
				sent[i]++
			}
		})
	}
	wg.Wait()
	var want uint64
	for _, n := range sent {
		want += n
	}
	// Every frame written must arrive; the run ends when the last does.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got uint64
		for i := range received {
			got += received[i].Load()
		}
		if got == want || time.Now().After(deadline) {
			if got != want {
				rec.errs.add(fmt.Sprintf("%d frames written, %d received", want, got))
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	res.CPU = cpu.end()
	res.Timeline = prog.stop()
	if e := writeErr.Load(); e != nil {
		rec.errs.add(fmt.Sprintf("write: %v", *e))
	}
	res.Errors, res.ErrorCount = rec.errs.snapshot()
	res.Seconds, res.Count, res.Unit = took.Seconds(), rec.count.Load(), "frames/s"
	res.Latency = latency(rec.total())
	res.Counts["frames"] = int64(want)
	if res.Count > 0 {
		us := res.CPU.Bench * took.Seconds() * 1e6 / float64(res.Count)
		res.Figures["cpu_us_per_frame"] = us
		res.Figures["dm_ceiling_msgs_per_s"] = float64(runtime.NumCPU()) * 1e6 / (dmFrames * us)
	}
	return nil
}
