// Package memlimit keeps the Go runtime's soft memory limit a little above
// what a backup's pipeline needs, and above the live heap whatever it grows
// to.
//
// Why: a backup's live heap does not grow with the stream (the chunk pool,
// the blob buffers in flight and the index), but its peak RSS is the highest
// heap of all its collections plus the idle memory the runtime has not yet
// handed back, and both rise with the number of collections, that is with
// the stream's length. A limit near the pipeline's working set caps that:
// near the limit the runtime collects a little earlier and returns idle
// memory at once. A fixed limit would make a process whose live heap is
// larger (a repository with a large index, a check of many packs) collect
// without pause, so the limit follows the live heap: it never falls below
// Headroom(live).
package memlimit

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// base covers the runtime, the index of a small repository, the
	// compressors and the collector's slack.
	base = 56 << 20
	// perWorker covers one worker's share of the pipeline: a chunk
	// buffer of up to 8 MiB, its compressed, sealed and read-back copies
	// and the sealed blobs waiting to be packed, with the collector's
	// slack on top.
	perWorker = 24 << 20
	// minSlack is the least the heap may grow past the live heap before
	// the limit makes the runtime collect.
	minSlack = 16 << 20
)

// Pipeline is the limit for a pipeline of workers goroutines (at least one)
// when the live heap is small.
func Pipeline(workers int) int64 {
	if workers < 1 {
		workers = 1
	}
	return base + perWorker*int64(workers)
}

// Headroom is the least limit for a live heap of live bytes: a quarter of
// it and minSlack more, so that a large live set is collected at most
// every live/4 + 16 MiB of allocation instead of without pause.
func Headroom(live uint64) int64 {
	return int64(live + live/4 + minSlack)
}

// Limit is the limit for workers goroutines and a live heap of live bytes.
func Limit(workers int, live uint64) int64 {
	return max(Pipeline(workers), Headroom(live))
}

// Runtime is the part of the Go runtime the limit is read from and applied
// to; tests give a fake.
type Runtime interface {
	// LiveHeap is the heap that survived the last collection.
	LiveHeap() uint64
	// SetLimit sets the soft memory limit (see debug.SetMemoryLimit).
	SetLimit(bytes int64)
}

// Go is the process's own runtime.
type Go struct{}

// LiveHeap reads /gc/heap/live:bytes.
func (Go) LiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// SetLimit calls debug.SetMemoryLimit.
func (Go) SetLimit(bytes int64) { debug.SetMemoryLimit(bytes) }

// Applies reports whether the process should set its own limit: not when
// the operator tuned the collector with GOMEMLIMIT or GOGC, which the
// runtime honours as they are.
func Applies(getenv func(string) string) bool {
	return getenv("GOMEMLIMIT") == "" && getenv("GOGC") == ""
}

// Start sets the limit for workers goroutines at once and then, every
// interval until ctx ends, raises or lowers it with the live heap (never
// below Pipeline(workers)), leaving the last limit set when ctx ends.
func Start(ctx context.Context, rt Runtime, workers int, every time.Duration) {
	cur := Limit(workers, rt.LiveHeap())
	rt.SetLimit(cur)
	go follow(ctx, rt, workers, every, cur)
}

func follow(ctx context.Context, rt Runtime, workers int, every time.Duration, cur int64) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l := Limit(workers, rt.LiveHeap()); l != cur {
			rt.SetLimit(l)
			cur = l
		}
	}
}
