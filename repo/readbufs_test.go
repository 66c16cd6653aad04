package repo

import (
	"context"
	"crypto/sha256"
	"io"
	"runtime"
	"testing"

	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// Once a reader is under way, its buffers come from its own free list: the
// second half of a dump allocates a small fraction of its size. Buffers
// from the repository's sync.Pool were dropped at every garbage
// collection, and those above 2 MiB were never pooled, so a dump allocated
// about its own size again (0.48 bytes per byte here). How much the list
// still allocates depends on timing; with sealed bytes in per-worker
// scratch buffers it reached 0.28 on a loaded CI host, from the shared
// list 0.001-0.11 over twenty runs, half of them beside two busy loops.
func TestFileReaderSteadyStateAllocation(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, 0, Options{})
	const size = 192 << 20
	h := sha256.New()
	res, err := r.BackupStream(ctx, Stream{Name: "mixed.dump", Reader: io.TeeReader(bench.Stream(bench.DefaultSeed, size), h)}, BackupOptions{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := r.FindNode(ctx, res.Snapshot, "/mixed.dump")
	if err != nil {
		t.Fatal(err)
	}
	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	got := sha256.New()
	if _, err := io.CopyN(got, fr, size/2); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := io.Copy(got, fr)
	runtime.ReadMemStats(&after)
	if err != nil || n != size/2 {
		t.Fatalf("second half: %d bytes, %v", n, err)
	}
	if string(got.Sum(nil)) != string(h.Sum(nil)) {
		t.Fatal("the file read back differs from what was stored")
	}
	perByte := float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	t.Logf("second half of a %d MiB dump: %.3f bytes allocated per byte read, %d GCs", size>>20, perByte, after.NumGC-before.NumGC)
	if perByte > 0.25 {
		t.Fatalf("the second half of the dump allocated %.3f bytes per byte read; want at most 0.25", perByte)
	}
	// Every byte of budget taken (a range's plaintext, then its buffers'
	// spare capacity) was given back once read.
	if _, err := fr.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read at the end: %v", err)
	}
	fr.budget.mu.Lock()
	avail := fr.budget.avail
	fr.budget.mu.Unlock()
	if avail != readBudget {
		t.Fatalf("budget after the whole file: %d of %d bytes free", avail, readBudget)
	}
}

// The free list hands out the smallest buffer that fits, rounds new ones
// up so they fit the next blob of about their size, and holds at most max
// idle bytes, dropping the oldest first.
func TestReadBufs(t *testing.T) {
	l := &readBufs{max: 3 << 20}
	a := l.get(1000)
	if len(a) != 0 || cap(a) != readBufRound {
		t.Fatalf("new buffer for 1000 bytes: len %d cap %d; want 0 and %d", len(a), cap(a), readBufRound)
	}
	big := make([]byte, 5, 2<<20)
	l.put(a[:10])
	l.put(big)
	if l.idle != readBufRound+2<<20 {
		t.Fatalf("idle %d after two puts", l.idle)
	}
	// The small one serves a small request, though the big one fits too.
	if b := l.get(100 << 10); cap(b) != readBufRound || len(b) != 0 {
		t.Fatalf("get(100 KiB) gave cap %d len %d; want the free %d-byte buffer, empty", cap(b), len(b), readBufRound)
	}
	// Nothing smaller is free now: the big one serves.
	if b := l.get(200 << 10); cap(b) != 2<<20 {
		t.Fatalf("get(200 KiB) gave cap %d; want the free 2 MiB buffer", cap(b))
	}
	if l.idle != 0 || len(l.free) != 0 {
		t.Fatalf("idle %d, %d free after taking both", l.idle, len(l.free))
	}
	// Larger than any free buffer: a new one, rounded up.
	if b := l.get(300 << 10); cap(b) != 3*readBufRound {
		t.Fatalf("get(300 KiB) on an empty list gave cap %d; want %d", cap(b), 3*readBufRound)
	}

	// The bound: the oldest idle buffers go first; one larger than the
	// bound is not kept; an empty one is ignored.
	first, second, third := make([]byte, 0, 1<<20), make([]byte, 0, 1<<20), make([]byte, 0, 2<<20)
	l.put(first)
	l.put(second)
	l.put(third)
	if l.idle != 3<<20 || len(l.free) != 2 || &l.free[0][:1][0] != &second[:1][0] {
		t.Fatalf("after 1+1+2 MiB into a 3 MiB list: idle %d, %d free; want the first dropped", l.idle, len(l.free))
	}
	l.put(make([]byte, 0, 4<<20))
	l.put(nil)
	if l.idle != 3<<20 || len(l.free) != 2 {
		t.Fatalf("after a 4 MiB and a nil put: idle %d, %d free", l.idle, len(l.free))
	}
}
