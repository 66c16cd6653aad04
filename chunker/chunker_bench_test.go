package chunker_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	rc "github.com/restic/chunker"

	"github.com/scalr-platform/scalr-backup/chunker"
	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// benchPolynomial is a fixed irreducible polynomial derived from a seeded
// generator, so chunk boundaries, and so the figures, are the same in
// every run.
func benchPolynomial(b *testing.B) chunker.Pol {
	b.Helper()
	src := rand.NewChaCha8([32]byte{'s', 'c', 'a', 'l', 'r', '-', 'b', 'e', 'n', 'c', 'h'})
	pol, err := rc.DerivePolynomial(src)
	if err != nil {
		b.Fatal(err)
	}
	return pol
}

// BenchmarkChunker measures content-defined chunking alone: 64 MiB of the
// `make bench` stream (half COPY-like text, half random) from memory,
// through the bounded buffer pool, each chunk released at once.
func BenchmarkChunker(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(bench.Stream(bench.DefaultSeed, size))
	if err != nil {
		b.Fatal(err)
	}
	pol := benchPolynomial(b)
	pool := chunker.NewPool(4)
	ctx := context.Background()
	b.SetBytes(size)
	b.ReportAllocs()
	var chunks int
	for b.Loop() {
		c := chunker.New(bytes.NewReader(data), pol, pool)
		chunks = 0
		for {
			ch, err := c.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			chunks++
			ch.Release()
		}
	}
	b.ReportMetric(float64(chunks), "chunks/op")
	b.ReportMetric(float64(size)/float64(chunks)/(1<<10), "KiB/chunk")
}
