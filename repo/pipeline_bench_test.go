package repo

// Per-stage benchmarks of the backup and restore pipeline:
//
//	go test -run '^$' -bench . ./chunker ./repo
//
// Each reports MB/s of plaintext (b.SetBytes). They run only with -bench,
// so they cost nothing in the normal test suite. The data is the
// `make bench` stream (internal/bench): COPY-like text rows and random
// bytes. BenchmarkBackupStream runs the whole pipeline against an
// in-memory backend and is the one to profile:
//
//	go test -run '^$' -bench BackupStream -benchtime 5x \
//	    -cpuprofile cpu.pprof -memprofile mem.pprof ./repo
//	go tool pprof -top repo.test cpu.pprof

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/chunker"
	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// benchKDF keeps key derivation out of the figures.
var benchKDF = &KDFParams{N: 1024, R: 8, P: 1}

func benchRepo(b *testing.B, opts Options) *Repository {
	b.Helper()
	r, err := Init(context.Background(), mem.New(), "bench", InitOptions{KDF: benchKDF}, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// benchChunks returns n distinct chunks of size bytes: COPY-like text when
// text is true, else random bytes.
func benchChunks(b *testing.B, n, size int, text bool) [][]byte {
	b.Helper()
	var src io.Reader = bench.NewTextGenerator(bench.DefaultSeed)
	if !text {
		// The stream's second segment is random and at least 1 MiB long;
		// later random segments follow every text one. Simplest: keep the
		// non-text 4 KiB pages of a longer stream.
		src = randomOnly(bench.NewGenerator(bench.DefaultSeed))
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		if _, err := io.ReadFull(src, out[i]); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// randomOnly passes on the 4 KiB pages of g that are not text.
func randomOnly(g *bench.Generator) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		page := make([]byte, 4096)
		for {
			_, _ = io.ReadFull(g, page)
			if isPrintable(page) {
				continue
			}
			if _, err := pw.Write(page); err != nil {
				return
			}
		}
	}()
	return pr
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c != '\n' && c != '\t' && (c < 32 || c > 126) {
			return false
		}
	}
	return true
}

// BenchmarkSealBlob measures one blob worker's job on 1 MiB chunks: SHA-256
// of the plaintext, zstd (format version 2, auto), seal (AES-CTR +
// Poly1305), and the read-back check (the seal against the compressed
// bytes, then decompress and compare). The
// -parallel variants run it on every CPU at once, as a backup's workers
// do, sharing the repository's encoder and decoder.
func BenchmarkSealBlob(b *testing.B) {
	const size = 1 << 20
	for _, kind := range []struct {
		name string
		text bool
	}{{"compressible", true}, {"random", false}} {
		chunks := benchChunks(b, 16, size, kind.text)
		r := benchRepo(b, Options{})
		seal := func(i int) int {
			data := chunks[i%len(chunks)]
			h := BlobHandle{ID: Hash(data), Type: DataBlob}
			sealed, _, err := r.sealBlob(h, data)
			if err != nil {
				b.Error(err)
				return 0
			}
			n := len(sealed)
			r.putBuf(sealed)
			return n
		}
		b.Run(kind.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			var stored, i int
			for b.Loop() {
				stored += seal(i)
				i++
			}
			b.ReportMetric(float64(stored)/float64(i*size), "stored/plain")
		})
		b.Run(kind.name+"-parallel", func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					seal(i)
					i++
				}
			})
		})
	}
}

// BenchmarkZstdEncoderConcurrency isolates the compressor: EncodeAll of
// 1 MiB text chunks from every CPU at once, on one shared encoder created
// with the repository's options, once with WithEncoderConcurrency(1) (what
// newRepository sets: concurrent EncodeAll calls queue for its single
// internal encoder) and once with GOMAXPROCS internal encoders (the
// library's default). On a machine with n CPUs, the second should approach
// n times the first; equal figures mean compression is serialised.
func BenchmarkZstdEncoderConcurrency(b *testing.B) {
	const size = 1 << 20
	chunks := benchChunks(b, 16, size, true)
	for _, conc := range []int{1, runtime.GOMAXPROCS(0)} {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest), // what auto uses

			zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(512<<10),
			zstd.WithEncoderConcurrency(conc),
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encoders=%d", conc), func(b *testing.B) {
			b.SetBytes(size)
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]byte, 0, size)
				i := 0
				for pb.Next() {
					dst = enc.EncodeAll(chunks[i%len(chunks)], dst[:0])
					i++
				}
			})
		})
		enc.Close()
	}
}

// BenchmarkPackBuilder measures the packer: appending 16 MiB of sealed
// blobs (hashing them for the pack's name as they go) and finishing the
// pack (sealed header, length, SHA-256).
func BenchmarkPackBuilder(b *testing.B) {
	r := benchRepo(b, Options{})
	const blobSize = 1<<20 - 4096
	chunks := benchChunks(b, 16, blobSize, false)
	type sealed struct {
		h    BlobHandle
		data []byte
	}
	var blobs []sealed
	total := 0
	for _, c := range chunks {
		h := BlobHandle{ID: Hash(c), Type: DataBlob}
		s, err := r.key.Seal(nil, c)
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, sealed{h, s})
		total += len(s)
	}
	capacity := DefaultPackSize + 64<<10
	b.SetBytes(int64(total))
	b.ReportAllocs()
	buf := make([]byte, 0, capacity)
	for b.Loop() {
		p := newPackBuilder(0)
		p.buf = buf[:0]
		for _, s := range blobs {
			p.add(s.h, s.data, 0)
		}
		fp, err := p.finish(r.key)
		if err != nil {
			b.Fatal(err)
		}
		buf = fp.data[:0]
	}
}

// BenchmarkFileReader measures a restore's reader (dump): a 64 MiB file of
// the `make bench` stream, stored once in an in-memory repository, read
// back through OpenFile (ranged pack reads, decrypt, decompress, SHA-256 of
// every blob) into io.Discard.
func BenchmarkFileReader(b *testing.B) {
	const size = 64 << 20
	r := benchRepo(b, Options{})
	ctx := context.Background()
	res, err := r.BackupStream(ctx, Stream{Name: "bench.dump", Reader: bench.Stream(bench.DefaultSeed, size)}, BackupOptions{Hostname: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	node, err := r.FindNode(ctx, res.Snapshot, "/bench.dump")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		fr, err := r.OpenFile(ctx, node)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, fr)
		fr.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}

// BenchmarkBackupStream runs the whole backup pipeline (chunker, workers,
// packer, in-memory uploads, index, tree, snapshot) on 64 MiB of the
// `make bench` stream: "new" into an empty repository, "dedup" the same
// stream again. It is the benchmark to profile (see the top of this file).
func BenchmarkBackupStream(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(bench.Stream(bench.DefaultSeed, size))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	backup := func(b *testing.B, r *Repository) {
		_, err := r.BackupStream(ctx, Stream{Name: "bench.dump", Reader: &sliceReader{data: data}}, BackupOptions{Hostname: "bench"})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("new", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			r, err := Init(ctx, mem.New(), "bench", InitOptions{KDF: benchKDF}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			backup(b, r)
			b.StopTimer()
			r.Close()
			b.StartTimer()
		}
	})
	b.Run("dedup", func(b *testing.B) {
		r := benchRepo(b, Options{})
		backup(b, r)
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			backup(b, r)
		}
	})
}

// sliceReader reads data without implementing io.WriterTo, so the chunker
// sees a stream as it would from a pipe.
type sliceReader struct {
	data []byte
	pos  int
}

func (s *sliceReader) Read(p []byte) (int, error) {
	if s.pos >= len(s.data) {
		return 0, io.EOF
	}
	n := copy(p, s.data[s.pos:])
	s.pos += n
	return n, nil
}

// BenchmarkCeiling computes the best single-stream throughput this machine
// allows: each stage of a backup is run alone on one locked thread over
// 64 MiB of the `make bench` stream, in the pipeline's order (cut, SHA-256
// of the chunk, zstd at auto, seal, read-back check, SHA-256 of the sealed
// bytes for the pack's name), and its CPU time (RUSAGE_THREAD) is
// recorded. I/O, copies into packs, uploads and garbage collection are
// left out, so no backup can beat the figures. With P CPUs the cutting
// runs on one goroutine beside the others, so a first backup is bounded
// by min(chunker rate, P / total CPU per byte), a deduplicating one (cut
// and hash only) by min(chunker rate, P / (cut + hash)); a dump (open,
// decompress, hash each blob) by P / read, check --read-data by
// P / (read + pack hash). Metrics are MB/s
// (1e6 bytes per second): per CPU second for the stages, wall for the
// ceilings.
func BenchmarkCeiling(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(bench.Stream(bench.DefaultSeed, size))
	if err != nil {
		b.Fatal(err)
	}
	r := benchRepo(b, Options{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const (
		stCut = iota
		stHash
		stZstd
		stSeal
		stVerify
		stPackHash
		stRead // not part of a backup: what a dump does per blob
		nStages
	)
	names := [nStages]string{"cut", "sha256", "zstd", "seal", "verify", "packhash", "read"}
	var cpu [nStages]time.Duration
	clock := func(st int, f func()) {
		t0 := threadCPU()
		f()
		cpu[st] += threadCPU() - t0
	}
	pool := chunker.NewPool(2)
	ctx := context.Background()
	comp := make([]byte, 0, chunker.MaxSize+chunker.MaxSize/64)
	sealed := make([]byte, 0, cap(comp)+64)
	opened := make([]byte, 0, cap(sealed))
	plain := make([]byte, 0, chunker.MaxSize)
	b.SetBytes(size)
	for b.Loop() {
		c := chunker.New(&sliceReader{data: data}, r.cfg.ChunkerPolynomial, pool)
		for {
			var ch chunker.Chunk
			var err error
			clock(stCut, func() { ch, err = c.Next(ctx) })
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			var id [32]byte
			clock(stHash, func() { id = sha256.Sum256(ch.Data) })
			clock(stZstd, func() { comp = r.enc.EncodeAll(ch.Data, comp[:0]) })
			clock(stSeal, func() { sealed, err = r.key.Seal(sealed[:0], comp) })
			if err != nil {
				b.Fatal(err)
			}
			clock(stVerify, func() { err = r.verifySealed(sealed, comp, true, ch.Data) })
			if err != nil {
				b.Fatal(err)
			}
			clock(stPackHash, func() { sha256.Sum256(sealed) })
			clock(stRead, func() {
				opened, err = r.key.Open(opened[:0], sealed)
				if err == nil {
					plain, err = r.dec.DecodeAll(opened, plain[:0])
				}
				if err == nil && sha256.Sum256(plain) != id {
					b.Fatal("read-back differs")
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			ch.Release()
		}
	}
	n := float64(b.N) * size / 1e6 // MB processed per stage
	var total time.Duration
	for st, d := range cpu {
		b.ReportMetric(n/d.Seconds(), names[st]+"-MB/cpu-s")
		if st != stRead {
			total += d
		}
	}
	p := float64(runtime.GOMAXPROCS(0))
	cut := n / cpu[stCut].Seconds()
	b.ReportMetric(min(cut, p*n/total.Seconds()), "ceiling-new-MB/s")
	b.ReportMetric(min(cut, p*n/(cpu[stCut]+cpu[stHash]).Seconds()), "ceiling-dedup-MB/s")
	b.ReportMetric(n/total.Seconds(), "new-MB/cpu-s")
	// A dump opens, decompresses and hashes every blob, all CPUs at once;
	// check --read-data also hashes every pack.
	b.ReportMetric(p*n/cpu[stRead].Seconds(), "ceiling-dump-MB/s")
	b.ReportMetric(p*n/(cpu[stRead]+cpu[stPackHash]).Seconds(), "ceiling-check-MB/s")
}
