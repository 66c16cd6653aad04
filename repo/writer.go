package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// Writer adds blobs to the repository. SaveBlob may be called from many
// goroutines: hashing, compression and sealing run on the caller's
// goroutine, packs are uploaded by at most Options.Uploaders goroutines, and
// a caller blocks while all uploaders are busy, which bounds memory to
// about (uploaders + 2) packs whatever the amount of data.
//
// Nothing a Writer stores is visible to readers until Flush has stored every
// pack and then written the index files that name them.
type Writer struct {
	r   *Repository
	idx *Index
	ctx context.Context

	mu       sync.Mutex
	inFlight map[BlobHandle]struct{}
	packs    map[BlobType]*packBuilder
	stats    WriteStats

	uploadSlots chan struct{}
	freeBufs    chan []byte
	uploads     sync.WaitGroup
	errMu       sync.Mutex
	err         error
}

// WriteStats counts what a Writer added.
type WriteStats struct {
	DataBlobs int `json:"data_blobs"`
	TreeBlobs int `json:"tree_blobs"`
	// DataAdded is the plaintext bytes of new blobs.
	DataAdded uint64 `json:"data_added"`
	// DataAddedPacked is the stored bytes of new blobs (after compression
	// and sealing).
	DataAddedPacked uint64 `json:"data_added_packed"`
	Packs           int    `json:"packs"`
}

// NewWriter starts a write session; uploads run under ctx. The index is
// loaded if it was not yet.
func (r *Repository) NewWriter(ctx context.Context) (*Writer, error) {
	idx, err := r.Index(ctx)
	if err != nil {
		return nil, err
	}
	return r.newWriter(ctx, idx), nil
}

// newWriter starts a write session that deduplicates against idx and
// records new packs in it.
func (r *Repository) newWriter(ctx context.Context, idx *Index) *Writer {
	return &Writer{
		r: r, idx: idx, ctx: ctx,
		inFlight:    map[BlobHandle]struct{}{},
		packs:       map[BlobType]*packBuilder{},
		uploadSlots: make(chan struct{}, r.opts.Uploaders),
		freeBufs:    make(chan []byte, 1),
	}
}

// Stats returns what was added so far.
func (w *Writer) Stats() WriteStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Err returns the first error of any upload so far.
func (w *Writer) Err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *Writer) fail(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// SaveBlob stores data as a blob of type t unless the repository or this
// session already has it. It returns the blob's ID and whether it was new.
// data may be reused by the caller once SaveBlob returns.
func (w *Writer) SaveBlob(ctx context.Context, t BlobType, data []byte) (ID, bool, error) {
	sb, err := w.prepare(t, data)
	if err != nil {
		return ID{}, false, err
	}
	if err := w.commit(ctx, sb); err != nil {
		return ID{}, false, err
	}
	return sb.h.ID, sb.sealed != nil, nil
}

// sealedBlob is a blob ready to be packed. A nil sealed means the blob is
// already stored or claimed, and there is nothing to pack.
type sealedBlob struct {
	h        BlobHandle
	sealed   []byte
	ulen     uint32
	plainLen int
}

// prepare hashes data, claims it against duplicates, and compresses and
// seals it: the expensive part of saving, safe to run on many goroutines.
func (w *Writer) prepare(t BlobType, data []byte) (sealedBlob, error) {
	if err := w.Err(); err != nil {
		return sealedBlob{}, err
	}
	sb := sealedBlob{h: BlobHandle{ID: Hash(data), Type: t}, plainLen: len(data)}
	if w.idx.Has(sb.h) {
		return sb, nil
	}
	w.mu.Lock()
	if _, ok := w.inFlight[sb.h]; ok {
		w.mu.Unlock()
		return sb, nil
	}
	w.inFlight[sb.h] = struct{}{}
	w.mu.Unlock()
	sealed, ulen, err := w.r.sealBlob(sb.h, data)
	if err != nil {
		w.fail(err)
		return sealedBlob{}, err
	}
	sb.sealed, sb.ulen = sealed, ulen
	return sb, nil
}

// commit appends a prepared blob to its pack, uploading the pack first if
// the blob would take it past the target size. Callers that commit in
// stream order get packs whose blobs are in file order, which lets a
// restore fetch neighbouring blobs with one ranged read.
func (w *Writer) commit(ctx context.Context, sb sealedBlob) error {
	if sb.sealed == nil {
		return nil
	}
	w.mu.Lock()
	p := w.packs[sb.h.Type]
	var full *packBuilder
	if p != nil && len(p.blobs) > 0 && p.size()+len(sb.sealed) > w.r.opts.PackSize {
		full = p
		p = nil
	}
	if p == nil {
		p = w.newPackBuilder()
		w.packs[sb.h.Type] = p
	}
	if err := p.add(sb.h, sb.sealed, sb.ulen); err != nil {
		// The pack's blobs are lost with it: the session cannot go on.
		delete(w.packs, sb.h.Type)
		p.discard()
		w.mu.Unlock()
		w.r.putBuf(sb.sealed)
		if full != nil {
			full.discard()
		}
		w.fail(err)
		return err
	}
	if sb.h.Type == DataBlob {
		w.stats.DataBlobs++
	} else {
		w.stats.TreeBlobs++
	}
	w.stats.DataAdded += uint64(sb.plainLen)
	w.stats.DataAddedPacked += uint64(len(sb.sealed))
	w.mu.Unlock()
	w.r.putBuf(sb.sealed)
	if full == nil {
		return nil
	}
	return w.upload(ctx, full)
}

// newPackBuilder starts a pack in a spool file (see newSpoolFile), so a
// pack being filled or uploaded costs no memory: packs held in memory were
// most of a backup's peak RSS. Without a usable temporary folder the pack
// is built in memory, as before, rather than failing the backup.
func (w *Writer) newPackBuilder() *packBuilder {
	if f, err := newSpoolFile(); err == nil {
		return newSpooledPackBuilder(f)
	}
	// A pack is closed before a blob would take it past the target size,
	// so only a single blob larger than the target makes the buffer grow.
	capacity := w.r.opts.PackSize + 64<<10
	select {
	case buf := <-w.freeBufs:
		p := newPackBuilder(0)
		p.buf = buf[:0]
		return p
	default:
		return newPackBuilder(capacity)
	}
}

// upload finishes p and hands it to an uploader, waiting for a free one.
func (w *Writer) upload(ctx context.Context, p *packBuilder) error {
	fp, err := p.finish(w.r.key)
	if err != nil {
		w.fail(err)
		return err
	}
	select {
	case w.uploadSlots <- struct{}{}:
	case <-ctx.Done():
		fp.close()
		return ctx.Err()
	case <-w.ctx.Done():
		fp.close()
		return w.ctx.Err()
	}
	w.mu.Lock()
	w.stats.Packs++
	w.mu.Unlock()
	w.uploads.Add(1)
	go func() {
		defer func() {
			fp.close()
			<-w.uploadSlots
			w.uploads.Done()
		}()
		h := backend.Handle{Type: backend.PackFile, Name: fp.id.String()}
		if err := w.r.be.Save(w.ctx, h, fp.source()); err != nil {
			w.fail(fmt.Errorf("save pack %v: %w", h, err))
			return
		}
		// Only a stored pack enters the index.
		w.idx.addStored(fp.id, fp.blobs)
		if fp.spool == nil {
			select {
			case w.freeBufs <- fp.data[:0]:
			default:
			}
		}
	}()
	return nil
}

// Flush uploads the partly filled packs, waits for every upload, and then
// writes index files for all packs this session stored. After Flush
// returns nil, every blob saved so far is readable and durable.
func (w *Writer) Flush(ctx context.Context) error {
	if err := w.flushPacks(ctx); err != nil {
		return err
	}
	return w.r.saveIndex(ctx, w.idx)
}

// flushPacks uploads the partly filled packs and waits for every upload.
func (w *Writer) flushPacks(ctx context.Context) error {
	// Data before trees: a tree is only useful once its data is stored.
	for _, t := range []BlobType{DataBlob, TreeBlob} {
		w.mu.Lock()
		p := w.packs[t]
		delete(w.packs, t)
		w.mu.Unlock()
		if p == nil {
			continue
		}
		if len(p.blobs) == 0 {
			p.discard()
			continue
		}
		if err := w.upload(ctx, p); err != nil {
			// Abort closes the spool file of the pack not yet uploaded.
			w.Abort()
			return err
		}
	}
	w.uploads.Wait()
	return w.Err()
}

// Abort waits for running uploads and drops the partly filled packs. What
// was uploaded stays unreferenced until a prune removes it.
func (w *Writer) Abort() {
	w.mu.Lock()
	for _, p := range w.packs {
		p.discard()
	}
	w.packs = map[BlobType]*packBuilder{}
	w.mu.Unlock()
	w.uploads.Wait()
}

// sealBlob compresses (in version 2, unless compression is off) and seals
// one blob, then opens the result again and compares it with the input:
// restic does the same since a memory fault once stored blobs that never
// read back, and a backup that cannot be restored is worse than a failed
// one. Comparing with the input gives the same guarantee as re-hashing the
// output at a fraction of the cost: the input's hash is the blob's ID.
func (r *Repository) sealBlob(h BlobHandle, data []byte) ([]byte, uint32, error) {
	plain := data
	var ulen uint32
	if r.compressing() && len(data) > 0 {
		// Room for the output of incompressible data (zstd stores it in
		// raw blocks, 3 bytes a block more): half the stream is such data,
		// and a smaller buffer made EncodeAll grow it, copying and
		// dropping the pooled one, for every such chunk. The buffer is
		// given back as soon as the blob is sealed.
		plain = r.enc.EncodeAll(data, r.getBuf(len(data)+len(data)>>10+64))
		ulen = uint32(len(data))
		defer r.putBuf(plain)
	}
	sealed, err := r.key.Seal(r.getBuf(len(plain)+crypto.Overhead), plain)
	if err != nil {
		return nil, 0, fmt.Errorf("seal %v: %w", h, err)
	}
	if err := r.verifySealed(sealed, plain, ulen != 0, data); err != nil {
		return nil, 0, fmt.Errorf("verify %v after sealing: %w", h, err)
	}
	return sealed, ulen, nil
}

// openBlob authenticates, decrypts, decompresses and hashes one stored
// blob, appending the plaintext to dst.
func (r *Repository) openBlob(b Blob, sealed []byte, dst []byte) ([]byte, error) {
	if uint32(len(sealed)) != b.Length {
		return nil, fmt.Errorf("%v: read %d bytes, want %d", b.BlobHandle, len(sealed), b.Length)
	}
	plain, err := r.key.Open(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("%v: decrypt: %w", b.BlobHandle, err)
	}
	if b.IsCompressed() {
		out, err := r.dec.DecodeAll(plain, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("%v: decompress: %w", b.BlobHandle, err)
		}
		if uint32(len(out)) != b.UncompressedLength {
			return nil, fmt.Errorf("%v: decompressed to %d bytes, index says %d", b.BlobHandle, len(out), b.UncompressedLength)
		}
		plain = out
	}
	if Hash(plain) != b.ID {
		return nil, fmt.Errorf("%v: content hash is %s", b.BlobHandle, Hash(plain).Str())
	}
	return plain, nil
}

// openBlobInPlace is openBlob without buffers of its own: sealed is
// authenticated and decrypted where it lies (CTR mode allows an exact
// overlap), and a compressed blob is decompressed into dst, which the
// caller sizes from the index. The plaintext returned lies in sealed when
// the blob is stored uncompressed, else in dst or, when dst was too small,
// in a buffer the decompressor allocated.
func (r *Repository) openBlobInPlace(b Blob, sealed, dst []byte) ([]byte, error) {
	if uint32(len(sealed)) != b.Length {
		return nil, fmt.Errorf("%v: read %d bytes, want %d", b.BlobHandle, len(sealed), b.Length)
	}
	if len(sealed) < crypto.Overhead {
		return nil, fmt.Errorf("%v: decrypt: %w: %d bytes, shorter than IV and tag", b.BlobHandle, crypto.ErrUnauthenticated, len(sealed))
	}
	plain, err := r.key.Open(sealed[crypto.IVSize:crypto.IVSize], sealed)
	if err != nil {
		return nil, fmt.Errorf("%v: decrypt: %w", b.BlobHandle, err)
	}
	if b.IsCompressed() {
		out, err := r.dec.DecodeAll(plain, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("%v: decompress: %w", b.BlobHandle, err)
		}
		if uint32(len(out)) != b.UncompressedLength {
			return nil, fmt.Errorf("%v: decompressed to %d bytes, index says %d", b.BlobHandle, len(out), b.UncompressedLength)
		}
		plain = out
	}
	if got := Hash(plain); got != b.ID {
		return nil, fmt.Errorf("%v: content hash is %s", b.BlobHandle, got.Str())
	}
	return plain, nil
}

// verifySealed checks that a freshly sealed blob opens to data: that
// sealed authenticates and decrypts to plain, the bytes that were sealed,
// and that plain, when compressed, decompresses to data. The first check
// runs a piece at a time without a buffer of the blob's size.
func (r *Repository) verifySealed(sealed, plain []byte, compressed bool, data []byte) error {
	if err := r.key.Verify(sealed, plain); err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if !compressed {
		return nil
	}
	out, err := r.dec.DecodeAll(plain, r.getBuf(len(data)))
	defer r.putBuf(out)
	if err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	if !bytes.Equal(out, data) {
		return errors.New("stored bytes do not read back as the input (memory or software fault)")
	}
	return nil
}

// LoadBlob reads, verifies and returns blob h. A blob the loaded index
// lacks makes it reload the index once (see ReloadIndex); one that is
// still missing is ErrBlobMissing.
func (r *Repository) LoadBlob(ctx context.Context, h BlobHandle) ([]byte, error) {
	pb, err := r.lookupFresh(ctx, h)
	if err != nil {
		return nil, err
	}
	ph := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
	sealed, err := loadRange(ctx, r.be, ph, int64(pb.Length), int64(pb.Offset))
	if err != nil {
		return nil, err
	}
	plain, err := r.openBlob(pb.Blob, sealed, nil)
	if err != nil {
		return nil, corrupt(ph.String(), "%w", err)
	}
	return plain, nil
}

// getBuf returns an empty buffer with at least n bytes of capacity from
// the repository's pool; putBuf gives it back. Blob buffers are the
// backup's main garbage, and reusing them keeps the heap near its floor.
func (r *Repository) getBuf(n int) []byte { return r.bufs.get(n) }

func (r *Repository) putBuf(b []byte) { r.bufs.put(b) }

// bufPool keeps blob buffers in a few size classes. One class of the
// largest size made every buffer cost 2 MiB while most hold far less (a
// compressed text chunk is a few hundred KiB): those idle and in-flight
// 2 MiB buffers were the largest part of a backup's live heap.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

// bufClasses is the number of size classes: 320 KiB, 576 KiB, 1088 KiB
// and pooledBufSize, each a power of two plus room for the sealing
// overhead and a compressor's slack.
const bufClasses = 4

func bufClassSize(i int) int { return 256<<10<<i + 64<<10 }

// pooledBufSize fits a typical chunk (about 1 MiB, mostly under 2 MiB)
// after compression or sealing: the largest class. Chunks near the 8 MiB
// maximum are rare and not worth keeping.
const pooledBufSize = 2<<20 + 64<<10

func (p *bufPool) get(n int) []byte {
	for i := 0; i < bufClasses; i++ {
		size := bufClassSize(i)
		if n > size {
			continue
		}
		if v := p.classes[i].Get(); v != nil {
			return (*(v.(*[]byte)))[:0]
		}
		return make([]byte, 0, size)
	}
	return make([]byte, 0, n)
}

// put keeps b only if it has exactly a class's capacity, so a class never
// fills up with buffers grown past its size.
func (p *bufPool) put(b []byte) {
	for i := 0; i < bufClasses; i++ {
		if cap(b) == bufClassSize(i) {
			b = b[:0]
			p.classes[i].Put(&b)
			return
		}
	}
}
