// Package chunker cuts a stream into content-defined chunks with the
// repository's polynomial, exactly as restic does, so that the same bytes
// give the same blobs whichever tool wrote them. Chunk buffers come from a
// bounded pool: a producer that outruns its consumers blocks instead of
// growing memory.
package chunker

import (
	"context"
	"errors"
	"fmt"
	"io"

	rc "github.com/restic/chunker"
)

// Pol is a chunker polynomial, the config's "chunker_polynomial".
type Pol = rc.Pol

// The chunk size bounds restic uses; blobs written with other bounds would
// not deduplicate against restic's.
const (
	MinSize = rc.MinSize
	MaxSize = rc.MaxSize
)

// RandomPolynomial returns a new random irreducible polynomial of degree 53.
func RandomPolynomial() (Pol, error) {
	p, err := rc.RandomPolynomial()
	if err != nil {
		return 0, fmt.Errorf("generate chunker polynomial: %w", err)
	}
	return p, nil
}

// Pool hands out chunk buffers of MaxSize capacity, at most a fixed number at
// once. Get blocks while all are out, which is how backpressure reaches the
// reader of the stream.
type Pool struct {
	free chan []byte
	size int
}

// NewPool returns a pool of n buffers of MaxSize bytes each, allocated lazily.
func NewPool(n int) *Pool {
	if n < 1 {
		n = 1
	}
	p := &Pool{free: make(chan []byte, n), size: bufSize}
	for i := 0; i < n; i++ {
		p.free <- nil
	}
	return p
}

// bufSize is a pooled buffer's capacity: the largest chunk, so the chunker
// never grows a buffer. Starting smaller and growing for the larger chunks
// saved 24 MiB of memory but cost a third more CPU on a deduplicating
// backup (allocation and page faults), so the pool keeps full-size buffers.
const bufSize = MaxSize

// Get waits for a free buffer or for ctx to end.
func (p *Pool) Get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.free:
		if b == nil {
			b = make([]byte, 0, p.size)
		}
		return b[:0], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Put returns a buffer obtained from Get.
func (p *Pool) Put(b []byte) {
	if cap(b) > p.size {
		b = nil // reallocated at the pool's size by the next Get
	}
	select {
	case p.free <- b[:0]:
	default:
		// More Puts than Gets is a caller bug; dropping the buffer keeps
		// the bound intact instead of blocking forever.
	}
}

// Chunk is one cut of the stream. Data aliases a pooled buffer: call Release
// once it is no longer needed.
type Chunk struct {
	Data   []byte
	Offset uint64
	pool   *Pool
}

// Release gives the chunk's buffer back to its pool.
func (c *Chunk) Release() {
	if c.pool != nil && c.Data != nil {
		c.pool.Put(c.Data)
		c.Data = nil
	}
}

// Chunker yields the chunks of one stream in order.
type Chunker struct {
	c      *rc.Chunker
	pool   *Pool
	offset uint64
}

// New cuts rd with pol, taking buffers from pool.
func New(rd io.Reader, pol Pol, pool *Pool) *Chunker {
	return &Chunker{c: rc.New(shortReadGuard{rd}, pol), pool: pool}
}

// shortReadGuard wraps io.ErrUnexpectedEOF from the stream: the underlying
// chunker reads with io.ReadFull and takes that exact error for its own
// short read, so a stream that reports it would be read again forever.
type shortReadGuard struct{ r io.Reader }

func (g shortReadGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err == io.ErrUnexpectedEOF {
		err = fmt.Errorf("stream ended early: %w", err)
	}
	return n, err
}

// Next returns the next chunk, or io.EOF after the last one. An error from
// the underlying reader is returned as is (wrapped), never as io.EOF.
func (c *Chunker) Next(ctx context.Context) (Chunk, error) {
	buf, err := c.pool.Get(ctx)
	if err != nil {
		return Chunk{}, err
	}
	ch, err := c.c.Next(buf)
	if err != nil {
		c.pool.Put(buf)
		if errors.Is(err, io.EOF) {
			return Chunk{}, io.EOF
		}
		return Chunk{}, fmt.Errorf("read stream at offset %d: %w", c.offset, err)
	}
	out := Chunk{Data: ch.Data, Offset: c.offset, pool: c.pool}
	c.offset += uint64(len(ch.Data))
	return out, nil
}
