package chunker_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	rc "github.com/restic/chunker"

	"github.com/scalr-platform/scalr-backup/chunker"
	"github.com/scalr-platform/scalr-backup/internal/bench"
)

// The chunker must cut exactly where restic's does, or the same dump
// stored by both tools would not deduplicate. github.com/restic/chunker
// v0.4.0 is the referee: on random bytes, the dump-like `make bench`
// stream, runs of zeros (MaxSize cuts), a repeating pattern and short
// streams, with several polynomials and readers that return a few bytes,
// half, or data together with io.EOF.

func refereePolynomials(t *testing.T, n int) []chunker.Pol {
	t.Helper()
	var pols []chunker.Pol
	for i := range n {
		src := rand.NewChaCha8([32]byte{'r', 'e', 'f', byte(i)})
		p, err := rc.DerivePolynomial(src)
		if err != nil {
			t.Fatal(err)
		}
		pols = append(pols, p)
	}
	// restic's own tests' polynomial.
	return append(pols, 0x3DA3358B4DC173)
}

func refereeCuts(t *testing.T, data []byte, pol chunker.Pol) []int {
	t.Helper()
	c := rc.New(bytes.NewReader(data), pol)
	buf := make([]byte, 0, rc.MaxSize)
	var cuts []int
	for {
		ch, err := c.Next(buf)
		if err == io.EOF {
			return cuts
		}
		if err != nil {
			t.Fatal(err)
		}
		cuts = append(cuts, int(ch.Length))
	}
}

func ourCuts(t *testing.T, rd io.Reader, data []byte, pol chunker.Pol) []int {
	t.Helper()
	c := chunker.New(rd, pol, chunker.NewPool(2))
	var cuts []int
	off := 0
	for {
		ch, err := c.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ch.Offset != uint64(off) || !bytes.Equal(ch.Data, data[off:off+len(ch.Data)]) {
			t.Fatalf("chunk %d at offset %d (reported %d) does not hold the input's bytes", len(cuts), off, ch.Offset)
		}
		off += len(ch.Data)
		cuts = append(cuts, len(ch.Data))
		ch.Release()
	}
	if off != len(data) {
		t.Fatalf("chunks cover %d of %d bytes", off, len(data))
	}
	return cuts
}

func TestCutsMatchRestic(t *testing.T) {
	rnd := make([]byte, 48<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	dump, err := io.ReadAll(bench.Stream(bench.DefaultSeed, 48<<20))
	if err != nil {
		t.Fatal(err)
	}
	pattern := bytes.Repeat([]byte("COPY public.t (a, b) FROM stdin;\n1\tx\n"), 600000)
	// Runs of 64 zero bytes are cut points for every polynomial: strewn
	// over random bytes every few KiB, several fall into one read, in
	// different stretches of the scan (see findLanes).
	sparse := withZeroRuns(rnd[:24<<20], 10<<10, 60<<10)
	dense := withZeroRuns(rnd[24<<20:40<<20], 100, 3000)
	inputs := []struct {
		name string
		data []byte
	}{
		{"random", rnd},
		{"dump-like", dump},
		{"zeros", make([]byte, 20<<20+12345)},
		{"pattern", pattern},
		{"zero runs every 10-60 KiB", sparse},
		{"zero runs every 100-3000 bytes", dense},
		{"empty", nil},
		{"one byte", []byte{7}},
		{"under MinSize", rnd[:chunker.MinSize-1]},
		{"MinSize", rnd[:chunker.MinSize]},
		{"MaxSize", make([]byte, chunker.MaxSize)},
		{"MaxSize+1", make([]byte, chunker.MaxSize+1)},
	}
	pols := refereePolynomials(t, 4)
	for _, in := range inputs {
		for pi, pol := range pols {
			want := refereeCuts(t, in.data, pol)
			got := ourCuts(t, bytes.NewReader(in.data), in.data, pol)
			if !equalCuts(got, want) {
				t.Fatalf("%s, polynomial %d (%v): %d chunks %v, restic %d chunks %v", in.name, pi, pol, len(got), head(got), len(want), head(want))
			}
			if len(in.data) > 0 && pi == 0 {
				t.Logf("%s: %d chunks, identical for %d polynomials", in.name, len(want), len(pols))
			}
		}
	}
	// Readers that split the stream differently change nothing.
	pol := pols[0]
	part := append(append([]byte{}, dump[:6<<20]...), sparse[:6<<20]...)
	want := refereeCuts(t, part, pol)
	for name, rd := range map[string]io.Reader{
		"half reads":     iotest.HalfReader(bytes.NewReader(part)),
		"data with EOF":  iotest.DataErrReader(bytes.NewReader(part)),
		"odd read sizes": &oddReader{data: part},
		"one byte reads": iotest.OneByteReader(bytes.NewReader(part[:2<<20])),
	} {
		w := want
		d := part
		if name == "one byte reads" {
			d = part[:2<<20]
			w = refereeCuts(t, d, pol)
		}
		if got := ourCuts(t, rd, d, pol); !equalCuts(got, w) {
			t.Fatalf("%s: %v, restic %v", name, head(got), head(w))
		}
	}
}

// A read error ends the stream with that error, wrapped, never io.EOF.
func TestReadErrorIsReturned(t *testing.T) {
	boom := errors.New("boom")
	data := make([]byte, 3<<20)
	rd := io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom))
	c := chunker.New(rd, refereePolynomials(t, 1)[0], chunker.NewPool(1))
	for {
		ch, err := c.Next(context.Background())
		if err == nil {
			ch.Release()
			continue
		}
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
		return
	}
}

// A polynomial no table fits is an error, not a panic.
func TestBadPolynomial(t *testing.T) {
	for _, pol := range []chunker.Pol{0, 1, 0xff, 1 << 60} {
		c := chunker.New(bytes.NewReader(make([]byte, 10)), pol, chunker.NewPool(1))
		if _, err := c.Next(context.Background()); err == nil || err == io.EOF {
			t.Fatalf("polynomial %#x: got %v, want an error", uint64(pol), err)
		}
	}
}

// withZeroRuns copies data with 64 zero bytes every lo to hi bytes.
func withZeroRuns(data []byte, lo, hi int) []byte {
	out := append([]byte{}, data...)
	r := rand.New(rand.NewPCG(3, 4))
	for p := lo; p+64 <= len(out); p += lo + r.IntN(hi-lo) {
		clear(out[p : p+64])
	}
	return out
}

// oddReader returns reads of varying, unaligned sizes.
type oddReader struct {
	data []byte
	n    int
}

func (o *oddReader) Read(p []byte) (int, error) {
	if len(o.data) == 0 {
		return 0, io.EOF
	}
	o.n++
	k := min(len(p), len(o.data), 1+(o.n*7919)%70000)
	copy(p, o.data[:k])
	o.data = o.data[k:]
	return k, nil
}

func equalCuts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func head(c []int) []int {
	if len(c) > 8 {
		return c[:8]
	}
	return c
}
