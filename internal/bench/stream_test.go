package bench

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// TestStreamDeterministic checks that a seed always gives the same bytes,
// that a shorter stream is a prefix of a longer one, and that reads of any
// size give the same bytes.
func TestStreamDeterministic(t *testing.T) {
	const n = 9 << 20
	a, err := io.ReadAll(Stream(7, n))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != n {
		t.Fatalf("got %d bytes, want %d", len(a), n)
	}
	// Odd read sizes.
	g := NewGenerator(7)
	var b []byte
	buf := make([]byte, 12345)
	for len(b) < n {
		k, _ := g.Read(buf[:min(len(buf), n-len(b), 1+len(b)%len(buf))])
		b = append(b, buf[:k]...)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("different read sizes gave different bytes")
	}
	short, _ := io.ReadAll(Stream(7, 1<<20))
	if !bytes.Equal(short, a[:1<<20]) {
		t.Fatal("a shorter stream is not a prefix of a longer one")
	}
	other, _ := io.ReadAll(Stream(8, 1<<20))
	if bytes.Equal(other, short) {
		t.Fatal("different seeds gave the same bytes")
	}
	if !bytes.HasPrefix(a, []byte("COPY public.events")) {
		t.Fatalf("stream starts with %q", a[:40])
	}
	t.Logf("sha256 of the first 9 MiB (seed 7): %x", sha256.Sum256(a))
}

// TestStreamHalfText checks the text/random split: about half of the bytes
// are printable text rows.
func TestStreamHalfText(t *testing.T) {
	const n = 64 << 20
	a, _ := io.ReadAll(Stream(DefaultSeed, n))
	text := 0
	for i := 0; i+4096 <= len(a); i += 4096 {
		if isText(a[i : i+4096]) {
			text += 4096
		}
	}
	frac := float64(text) / n
	t.Logf("text fraction over %d MiB: %.3f", n>>20, frac)
	if frac < 0.35 || frac > 0.65 {
		t.Fatalf("text fraction %.3f, want about 0.5", frac)
	}
}

func isText(b []byte) bool {
	for _, c := range b {
		if c != '\n' && c != '\t' && (c < 32 || c > 126) {
			return false
		}
	}
	return true
}

func BenchmarkGenerator(b *testing.B) {
	g := NewGenerator(DefaultSeed)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_, _ = g.Read(buf)
	}
}
