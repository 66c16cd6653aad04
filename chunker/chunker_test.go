package chunker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"
)

// A stream that fails with io.ErrUnexpectedEOF must end the chunking with
// that error, not be read again forever.
func TestUnexpectedEOFFromStreamIsAnError(t *testing.T) {
	pol, err := RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	rd := io.MultiReader(bytes.NewReader(data), errReader{io.ErrUnexpectedEOF})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := New(rd, pol, NewPool(2))
	for {
		ch, err := c.Next(ctx)
		if err == nil {
			ch.Release()
			continue
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			t.Fatalf("got %v, want a wrapped io.ErrUnexpectedEOF", err)
		}
		return
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Chunks reassemble to the input, and the same input cuts the same way.
func TestChunksReassembleDeterministically(t *testing.T) {
	pol, err := RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 20<<20)
	rand.New(rand.NewSource(2)).Read(data)
	cut := func() []int {
		var sizes []int
		var out bytes.Buffer
		c := New(bytes.NewReader(data), pol, NewPool(1))
		for {
			ch, err := c.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ch.Data) > MaxSize || (len(ch.Data) < MinSize && out.Len()+len(ch.Data) != len(data)) {
				t.Fatalf("chunk of %d bytes out of bounds", len(ch.Data))
			}
			out.Write(ch.Data)
			sizes = append(sizes, len(ch.Data))
			ch.Release()
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("chunks do not reassemble to the input")
		}
		return sizes
	}
	a, b := cut(), cut()
	if len(a) != len(b) {
		t.Fatalf("cut differently: %d vs %d chunks", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("chunk %d: %d vs %d bytes", i, a[i], b[i])
		}
	}
}
