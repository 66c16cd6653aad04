package memlimit

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"
)

const mib = 1 << 20

func TestLimit(t *testing.T) {
	for _, c := range []struct {
		workers int
		live    uint64
		want    int64
	}{
		{2, 0, 104 * mib},
		{2, 40 * mib, 104 * mib},  // a backup's usual live heap: the pipeline's limit
		{2, 70 * mib, 104 * mib},  // 70 + 17.5 + 16 is still below it
		{2, 200 * mib, 266 * mib}, // a large index: a quarter and 16 MiB above it
		{8, 40 * mib, 248 * mib},  // more workers, more buffers
		{0, 0, 80 * mib},          // at least one worker
		{-3, 1 << 40, 1<<40 + 1<<38 + 16*mib},
	} {
		if got := Limit(c.workers, c.live); got != c.want {
			t.Errorf("Limit(%d, %d MiB) = %d MiB, want %d MiB", c.workers, c.live/mib, got/mib, c.want/mib)
		}
	}
}

func TestApplies(t *testing.T) {
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	if !Applies(env(nil)) {
		t.Error("no GOGC or GOMEMLIMIT: the limit should apply")
	}
	if Applies(env(map[string]string{"GOMEMLIMIT": "1GiB"})) {
		t.Error("GOMEMLIMIT set: the operator's limit should stand")
	}
	if Applies(env(map[string]string{"GOGC": "off"})) {
		t.Error("GOGC set: the operator's tuning should stand")
	}
}

// fakeRuntime serves a live heap the test moves and passes on each limit
// set.
type fakeRuntime struct {
	live atomic.Uint64
	set  chan int64
}

func (f *fakeRuntime) LiveHeap() uint64 { return f.live.Load() }

func (f *fakeRuntime) SetLimit(b int64) { f.set <- b }

func TestStartFollowsTheLiveHeap(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt := &fakeRuntime{set: make(chan int64, 16)}
	rt.live.Store(10 * mib)
	Start(ctx, rt, 2, time.Millisecond)
	// The first limit is set before Start returns.
	select {
	case got := <-rt.set:
		if got != 104*mib {
			t.Fatalf("first limit %d MiB, want 104", got/mib)
		}
	default:
		t.Fatal("Start returned without setting a limit")
	}
	wait := func(want int64) {
		t.Helper()
		select {
		case got := <-rt.set:
			if got != want {
				t.Fatalf("limit %d MiB, want %d MiB", got/mib, want/mib)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no new limit (want %d MiB)", want/mib)
		}
	}
	rt.live.Store(400 * mib) // the index grew: the limit must follow
	wait(516 * mib)
	rt.live.Store(20 * mib) // it shrank again: back to the pipeline's limit
	wait(104 * mib)
	cancel()
	// After ctx ends nothing more is set, whatever the live heap does.
	time.Sleep(20 * time.Millisecond)
	for len(rt.set) > 0 {
		<-rt.set
	}
	rt.live.Store(900 * mib)
	time.Sleep(50 * time.Millisecond)
	if n := len(rt.set); n != 0 {
		t.Errorf("%d limits set after ctx ended", n)
	}
}

// TestGoRuntime runs the real runtime: a live heap larger than the
// pipeline's limit must lift the process's limit above it, or the
// collector would run without pause.
func TestGoRuntime(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt := Go{}
	Start(ctx, rt, 1, 5*time.Millisecond)
	if got := debug.SetMemoryLimit(-1); got < Pipeline(1) {
		t.Fatalf("limit %d MiB after Start, want at least %d MiB", got/mib, Pipeline(1)/mib)
	}
	live := make([][]byte, 0, 200)
	for range 200 {
		b := make([]byte, mib)
		for i := range b {
			b[i] = 1
		}
		live = append(live, b)
	}
	runtime.GC()
	if h := rt.LiveHeap(); h < 200*mib {
		t.Fatalf("live heap read as %d MiB with 200 MiB held", h/mib)
	}
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < Headroom(200*mib) {
		if time.Now().After(deadline) {
			t.Fatalf("limit %d MiB with 200 MiB live, want at least %d MiB", debug.SetMemoryLimit(-1)/mib, Headroom(200*mib)/mib)
		}
		time.Sleep(5 * time.Millisecond)
	}
	runtime.KeepAlive(live)
}
