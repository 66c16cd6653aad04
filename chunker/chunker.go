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
//
// It cuts where restic's chunker cuts (the tests hold it to
// github.com/restic/chunker on random and dump-like data with several
// polynomials) but does less work per byte: it reads straight into the
// pooled chunk buffer instead of through a staging buffer (only the bytes
// read past a cut are copied, into the next chunk), and it takes the byte
// leaving the 64-byte window from that buffer instead of keeping a copy of
// the window.
type Chunker struct {
	rd     io.Reader
	tab    *tables
	pool   *Pool
	offset uint64
	pol    Pol
	rest   []byte // bytes read past the last cut: the next chunk's start
	err    error  // the reader's error, returned once rest is used up
}

// New cuts rd with pol, taking buffers from pool.
func New(rd io.Reader, pol Pol, pool *Pool) *Chunker {
	return &Chunker{rd: rd, tab: newTables(pol), pol: pol, pool: pool}
}

// readSize bounds one Read: a read that crosses a cut leaves its tail to be
// copied into the next chunk, so smaller reads copy less; pipes deliver at
// most 64 KiB at a time anyway.
const readSize = 128 << 10

// maxEmptyReads is how many (0, nil) reads in a row are taken for a broken
// reader instead of being retried forever.
const maxEmptyReads = 100

// Next returns the next chunk, or io.EOF after the last one. An error from
// the underlying reader is returned (wrapped), never as io.EOF.
func (c *Chunker) Next(ctx context.Context) (Chunk, error) {
	if c.tab == nil {
		return Chunk{}, fmt.Errorf("chunker polynomial %v: degree out of range", c.pol)
	}
	if len(c.rest) == 0 && c.err != nil {
		return Chunk{}, c.finalErr()
	}
	buf, err := c.pool.Get(ctx)
	if err != nil {
		return Chunk{}, err
	}
	data := buf[:cap(buf)]
	if len(data) > MaxSize {
		data = data[:MaxSize]
	}
	n := copy(data, c.rest)
	c.rest = c.rest[:0]
	var s scanState
	empty := 0
	for {
		if cut, ok := c.tab.scan(data[:n], &s); ok {
			c.rest = append(c.rest, data[cut:n]...)
			return c.chunk(data[:cut]), nil
		}
		if n == len(data) {
			// MaxSize bytes without a cut point.
			return c.chunk(data[:n]), nil
		}
		if c.err != nil {
			if n > 0 && errors.Is(c.err, io.EOF) {
				// The stream's last chunk, shorter than the rest.
				return c.chunk(data[:n]), nil
			}
			// A failed read ends the stream; what was read of the
			// chunk is dropped with it.
			c.pool.Put(buf)
			return Chunk{}, c.finalErr()
		}
		end := min(n+readSize, len(data))
		m, err := c.rd.Read(data[n:end])
		n += m
		switch {
		case err != nil:
			c.err = err
		case m == 0:
			if empty++; empty >= maxEmptyReads {
				c.err = io.ErrNoProgress
			}
		default:
			empty = 0
		}
	}
}

func (c *Chunker) chunk(data []byte) Chunk {
	out := Chunk{Data: data, Offset: c.offset, pool: c.pool}
	c.offset += uint64(len(data))
	return out
}

// finalErr is what Next returns once the stream is used up: io.EOF, or
// the reader's error with the offset it happened at.
func (c *Chunker) finalErr() error {
	if errors.Is(c.err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("read stream at offset %d: %w", c.offset, c.err)
}
