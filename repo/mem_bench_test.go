package repo

import (
	"context"
	"io"
	"runtime"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// allocatedBytes is the heap allocated so far by the whole process.
func allocatedBytes() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// BenchmarkAllocPerByte reports the heap allocated per byte of stream
// (alloc-bytes/byte) for a backup into a fresh repository and for reading
// the file back (dump): the garbage the collector has to keep up with, and
// with the live heap what sets the peak RSS. The backup writes to a local
// repository in a temporary folder, as the in-memory backend's own copies
// of the packs would swamp the figure; per-stream buffers (the chunk pool)
// are a fixed cost that a 64 MiB stream makes look larger than it is.
func BenchmarkAllocPerByte(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(bench.Stream(bench.DefaultSeed, size))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("backup", func(b *testing.B) {
		b.SetBytes(size)
		var alloc uint64
		for b.Loop() {
			b.StopTimer()
			be := local.New(b.TempDir())
			r, err := Init(ctx, be, "bench", InitOptions{KDF: benchKDF}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			before := allocatedBytes()
			b.StartTimer()
			if _, err := r.BackupStream(ctx, Stream{Name: "bench.dump", Reader: &sliceReader{data: data}}, BackupOptions{Hostname: "bench"}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			alloc += allocatedBytes() - before
			r.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(alloc)/float64(uint64(b.N)*size), "alloc-bytes/byte")
	})
	b.Run("dump", func(b *testing.B) {
		r := benchRepo(b, Options{})
		res, err := r.BackupStream(ctx, Stream{Name: "bench.dump", Reader: &sliceReader{data: data}}, BackupOptions{Hostname: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		node, err := r.FindNode(ctx, res.Snapshot, "/bench.dump")
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		var alloc uint64
		for b.Loop() {
			before := allocatedBytes()
			fr, err := r.OpenFile(ctx, node)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, fr)
			fr.Close()
			if err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			alloc += allocatedBytes() - before
		}
		b.ReportMetric(float64(alloc)/float64(uint64(b.N)*size), "alloc-bytes/byte")
	})
}
