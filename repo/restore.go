package repo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/chunker"
)

// LoadTree loads and decodes tree blob id.
func (r *Repository) LoadTree(ctx context.Context, id ID) (*Tree, error) {
	buf, err := r.LoadBlob(ctx, BlobHandle{ID: id, Type: TreeBlob})
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Str(), err)
	}
	t, err := DecodeTree(buf)
	if err != nil {
		return nil, corrupt("tree "+id.Str(), "%w", err)
	}
	return t, nil
}

// FindNode walks from sn's root tree to the node at p ("/a/b/file").
func (r *Repository) FindNode(ctx context.Context, sn *Snapshot, p string) (*Node, error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		return nil, fmt.Errorf("path %q: need a file path, not the snapshot root", p)
	}
	treeID := *sn.Tree
	for i, name := range parts {
		t, err := r.LoadTree(ctx, treeID)
		if err != nil {
			return nil, err
		}
		n := t.Find(name)
		if n == nil {
			return nil, fmt.Errorf("path %q not in snapshot %s: %w", p, sn.ID.Str(), ErrNotFound)
		}
		if i == len(parts)-1 {
			return n, nil
		}
		if n.Type != NodeDir || n.Subtree == nil {
			return nil, fmt.Errorf("path %q not in snapshot %s: %q is a %s, not a directory: %w", p, sn.ID.Str(), "/"+strings.Join(parts[:i+1], "/"), n.Type, ErrNotFound)
		}
		treeID = *n.Subtree
	}
	return nil, fmt.Errorf("path %q: %w", p, ErrNotFound)
}

// Walk calls fn for every node below tree id, depth first, with its path.
func (r *Repository) Walk(ctx context.Context, id ID, fn func(p string, n *Node) error) error {
	return r.walk(ctx, id, "", fn)
}

func (r *Repository) walk(ctx context.Context, id ID, prefix string, fn func(string, *Node) error) error {
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		p := prefix + "/" + n.Name
		if err := fn(p, n); err != nil {
			return err
		}
		if n.Type == NodeDir && n.Subtree != nil {
			if err := r.walk(ctx, *n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Read-ahead bounds for file readers: neighbouring blobs of a pack are
// fetched with one ranged load of at most maxRangeBytes stored and
// maxRangePlain plaintext bytes, by readWorkers goroutines, while the
// buffers holding plaintext fetched but not yet consumed stay within
// readBudget.
//
// The budget is in plaintext bytes, not ranges: a dump's text compresses
// to about a third, so six ranges of 8 MiB stored held up to 150 MiB of
// plaintext and made a dump's peak memory larger than restic's. 32 MiB
// fetched ahead dumps from storage 20 ms away as fast as 40 MiB did.
const (
	maxRangeBytes = 8 << 20
	maxRangePlain = 8 << 20
	readWorkers   = 4
	readBudget    = 32 << 20
)

type blobRange struct {
	pack   ID
	blobs  []Blob
	weight int64 // plaintext bytes: what the range takes of readBudget
	// result is filled by a worker and closed.
	result chan rangeResult
}

type rangeResult struct {
	plain []plainBlob
	err   error
}

// plainBlob is one opened blob: buf is the pooled buffer, rest the part of
// it not yet returned, weight what it holds of readBudget.
type plainBlob struct {
	buf, rest []byte
	weight    int64
}

// FileReader streams a file's content in order, verifying each blob (MAC,
// decompression, SHA-256) before any of its bytes are returned.
type FileReader struct {
	r      *Repository
	node   *Node
	ranges []*blobRange
	cancel context.CancelFunc
	wg     sync.WaitGroup
	budget *byteBudget
	bufs   *readBufs

	next    int         // next range to consume
	pending []plainBlob // opened blobs not yet consumed, in order
	total   uint64
	err     error
}

// OpenFile returns a reader of a file node's bytes. Every blob is looked up
// first, so a file with a blob missing from the index fails here rather
// than after part of it was written somewhere.
func (r *Repository) OpenFile(ctx context.Context, n *Node) (*FileReader, error) {
	if n.Type != NodeFile {
		return nil, fmt.Errorf("%q is a %s, not a file", n.Name, n.Type)
	}
	idx, err := r.Index(ctx)
	if err != nil {
		return nil, err
	}
	var ranges []*blobRange
	var cur *blobRange
	var curBytes uint32
	for i, id := range n.Content {
		pb, ok := idx.Lookup(BlobHandle{ID: id, Type: DataBlob})
		if !ok {
			// Written by another process after the index was loaded, or
			// missing: reload once before saying which.
			var err error
			if pb, err = r.lookupFresh(ctx, BlobHandle{ID: id, Type: DataBlob}); err != nil {
				return nil, fmt.Errorf("file %q, part %d: %w", n.Name, i, err)
			}
		}
		plain := int64(pb.DataLength())
		if cur != nil && cur.pack == pb.PackID && pb.Offset == last(cur).Offset+last(cur).Length &&
			curBytes+pb.Length <= maxRangeBytes && cur.weight+plain <= maxRangePlain {
			cur.blobs = append(cur.blobs, pb.Blob)
			cur.weight += plain
			curBytes += pb.Length
			continue
		}
		cur = &blobRange{pack: pb.PackID, blobs: []Blob{pb.Blob}, weight: plain, result: make(chan rangeResult, 1)}
		curBytes = pb.Length
		ranges = append(ranges, cur)
	}
	ctx, cancel := context.WithCancel(ctx)
	fr := &FileReader{r: r, node: n, ranges: ranges, cancel: cancel, budget: newByteBudget(readBudget),
		bufs: &readBufs{max: 2*readBudget + maxRangePlain}}
	work := make(chan *blobRange)
	for i := 0; i < readWorkers; i++ {
		fr.wg.Add(1)
		go func() {
			defer fr.wg.Done()
			for br := range work {
				br.result <- fr.fetch(ctx, br)
			}
		}()
	}
	fr.wg.Add(1)
	go func() {
		defer fr.wg.Done()
		defer close(work)
		// Ranges take their budget here, in file order, and give it back
		// as Read consumes them, also in order: the range Read waits for
		// has always been given its share, so the budget cannot deadlock.
		for _, br := range ranges {
			if err := fr.budget.take(ctx, br.weight); err != nil {
				return
			}
			select {
			case work <- br:
			case <-ctx.Done():
				return
			}
		}
	}()
	return fr, nil
}

func last(br *blobRange) Blob { return br.blobs[len(br.blobs)-1] }

// fetch loads a range with one ranged read and opens its blobs as they
// stream in, each decrypted where it lies, in buffers from the reader's
// free list. A compressed blob's sealed bytes are decompressed into a
// second buffer and theirs goes back to the list at once; an uncompressed
// one becomes its own plaintext. The plaintext's buffer goes back once
// Read consumed it. Sealed and plain buffers share the one list: a scratch
// buffer per worker grew to the largest blob it had seen, four of them
// held up to 32 MiB beside the list, and every new largest blob was
// allocated again.
func (fr *FileReader) fetch(ctx context.Context, br *blobRange) rangeResult {
	first := br.blobs[0]
	end := last(br).Offset + last(br).Length
	h := backend.Handle{Type: backend.PackFile, Name: br.pack.String()}
	length, offset := int64(end-first.Offset), int64(first.Offset)
	rd, err := fr.r.be.Load(ctx, h, int(length), offset)
	if err != nil {
		return rangeResult{err: fmt.Errorf("load %v [%d+%d]: %w", h, offset, length, err)}
	}
	defer rd.Close()
	out := make([]plainBlob, 0, len(br.blobs))
	fail := func(err error) rangeResult {
		for _, b := range out {
			fr.bufs.put(b.buf)
		}
		return rangeResult{err: err}
	}
	for _, b := range br.blobs {
		var sealed, dst []byte
		if b.IsCompressed() {
			sealed = fr.bufs.get(int(b.Length))[:b.Length]
			// The index's length sizes the output only when it is
			// plausible: a damaged one must not make the reader allocate
			// gigabytes.
			if b.UncompressedLength <= chunker.MaxSize {
				dst = fr.bufs.get(int(b.UncompressedLength))
			}
		} else {
			sealed = fr.bufs.get(int(b.Length))[:b.Length]
		}
		if _, err := io.ReadFull(rd, sealed); err != nil {
			fr.bufs.put(dst)
			fr.bufs.put(sealed)
			return fail(fmt.Errorf("read %v [%d+%d]: %w", h, offset, length, err))
		}
		plain, err := fr.r.openBlobInPlace(b, sealed, dst)
		if err != nil {
			fr.bufs.put(dst)
			fr.bufs.put(sealed)
			return fail(corrupt(h.String(), "%w", err))
		}
		// An uncompressed blob's buffer is sealed; a compressed one's is
		// dst, or what the decompressor grew when dst was short. The
		// budget counts the buffer's whole capacity: the range took its
		// plaintext length, and the rest is taken now.
		buf := sealed
		if b.IsCompressed() {
			buf = plain[:0]
			fr.bufs.put(sealed)
		}
		weight := int64(cap(buf))
		fr.budget.force(weight - int64(b.DataLength()))
		out = append(out, plainBlob{buf: buf, rest: plain, weight: weight})
	}
	return rangeResult{plain: out}
}

// fill makes sure pending holds unconsumed bytes, waiting for the next
// range when it does not. At the end of the file it checks the length
// and returns io.EOF.
func (fr *FileReader) fill() error {
	if fr.err != nil {
		return fr.err
	}
	for len(fr.pending) == 0 {
		if fr.next >= len(fr.ranges) {
			if fr.total != fr.node.Size {
				fr.err = fmt.Errorf("file %q: content is %d bytes but the node says %d", fr.node.Name, fr.total, fr.node.Size)
				return fr.err
			}
			fr.err = io.EOF
			return io.EOF
		}
		res := <-fr.ranges[fr.next].result
		fr.ranges[fr.next] = nil
		fr.next++
		if res.err != nil {
			fr.err = fmt.Errorf("file %q: %w", fr.node.Name, res.err)
			return fr.err
		}
		for _, b := range res.plain {
			if len(b.rest) > 0 {
				fr.pending = append(fr.pending, b)
			} else {
				fr.release(b)
			}
		}
	}
	return nil
}

// consumed records n bytes of pending[0] as returned, and gives its
// buffer and budget back once all of it was.
func (fr *FileReader) consumed(n int) {
	fr.total += uint64(n)
	b := &fr.pending[0]
	b.rest = b.rest[n:]
	if len(b.rest) == 0 {
		fr.release(*b)
		fr.pending[0] = plainBlob{}
		fr.pending = fr.pending[1:]
	}
}

func (fr *FileReader) release(b plainBlob) {
	fr.bufs.put(b.buf)
	fr.budget.give(b.weight)
}

// Read implements io.Reader.
func (fr *FileReader) Read(p []byte) (int, error) {
	if err := fr.fill(); err != nil {
		return 0, err
	}
	n := copy(p, fr.pending[0].rest)
	fr.consumed(n)
	return n, nil
}

// WriteTo implements io.WriterTo: io.Copy then hands w whole blobs (about
// a MiB each) instead of copying them through 32 KiB buffers, which was
// a write system call per 32 KiB when w is a pipe or a file.
func (fr *FileReader) WriteTo(w io.Writer) (int64, error) {
	var written int64
	for {
		if err := fr.fill(); err != nil {
			if err == io.EOF {
				return written, nil
			}
			return written, err
		}
		n, err := w.Write(fr.pending[0].rest)
		written += int64(n)
		fr.consumed(n)
		if err != nil {
			return written, err
		}
	}
}

// byteBudget bounds the bytes held at once. One goroutine takes (the
// read-ahead feeder, in file order); any goroutine gives back.
type byteBudget struct {
	mu    sync.Mutex
	avail int64
	limit int64
	freed chan struct{} // signalled by give
}

func newByteBudget(limit int64) *byteBudget {
	return &byteBudget{avail: limit, limit: limit, freed: make(chan struct{}, 1)}
}

// take waits until n bytes are free (a request larger than the whole
// budget waits for all of it) or ctx ends.
func (b *byteBudget) take(ctx context.Context, n int64) error {
	n = min(n, b.limit)
	for {
		b.mu.Lock()
		if b.avail >= n {
			b.avail -= n
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// force takes n bytes without waiting, so that avail may go below zero:
// what a range needs beyond its plaintext (its buffers' spare capacity) is
// only known once they are chosen. Later takes wait until it is given back.
func (b *byteBudget) force(n int64) {
	b.mu.Lock()
	b.avail -= n
	b.mu.Unlock()
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.avail = min(b.avail+n, b.limit)
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// readBufs is one reader's free list of plaintext buffers. A dump that
// took its buffers from the repository's sync.Pool allocated about its own
// size again: the pool is emptied by every garbage collection (a 1 GiB
// dump ran 43 of them) and kept no buffer above 2 MiB, and each buffer
// allocated anew is cleared and faulted in, about a tenth of a dump's CPU
// time on a 2-CPU host. The read budget counts each buffer's capacity, so
// taking a larger buffer than a blob needs only fetches less ahead. Idle
// buffers are bounded by max, twice the budget and one range: the list
// also serves the workers' sealed bytes, and buffers of the wrong size
// wait in it beside those in use; with the budget and one range as the
// bound, a dump dropped up to a third of its buffers whenever Read caught
// up, only to allocate them again.
type readBufs struct {
	mu   sync.Mutex
	free [][]byte // oldest first
	idle int      // capacity held in free
	max  int      // bound on idle
}

// readBufRound is the granularity of new buffers, so that one freed by a
// blob fits the next blob of about its size.
const readBufRound = 128 << 10

// get returns an empty buffer of at least n bytes: the smallest free one
// large enough, else a new one.
func (l *readBufs) get(n int) []byte {
	l.mu.Lock()
	best := -1
	for i, b := range l.free {
		if c := cap(b); c >= n && (best < 0 || c < cap(l.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := l.free[best]
		l.free = append(l.free[:best], l.free[best+1:]...)
		l.idle -= cap(b)
		l.mu.Unlock()
		return b[:0]
	}
	l.mu.Unlock()
	return make([]byte, 0, (n+readBufRound-1)/readBufRound*readBufRound)
}

// put gives b back, dropping the oldest free buffers when the list would
// hold more than max bytes.
func (l *readBufs) put(b []byte) {
	if cap(b) == 0 || cap(b) > l.max {
		return
	}
	l.mu.Lock()
	for l.idle+cap(b) > l.max && len(l.free) > 0 {
		l.idle -= cap(l.free[0])
		l.free[0] = nil
		l.free = l.free[1:]
	}
	l.free = append(l.free, b[:0])
	l.idle += cap(b)
	l.mu.Unlock()
}

// Close stops the prefetchers and waits for them.
func (fr *FileReader) Close() error {
	fr.cancel()
	fr.wg.Wait()
	return nil
}
