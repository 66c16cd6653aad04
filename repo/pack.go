package repo

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

// Pack header entry types as stored on disk (not the BlobType values).
const (
	packData           = 0
	packTree           = 1
	packCompressedData = 2
	packCompressedTree = 3

	plainEntrySize      = 1 + 4 + 32
	compressedEntrySize = 1 + 4 + 4 + 32

	// maxHeaderSize bounds what a reader will load for a header (16 MiB).
	maxHeaderSize = 16 << 20
	// tailEntries is how many entries the first tail read tries to cover,
	// so most headers take one ranged load.
	tailEntries = 15
)

func entrySize(b Blob) int {
	if b.IsCompressed() {
		return compressedEntrySize
	}
	return plainEntrySize
}

// appendHeaderEntry encodes one header entry.
func appendHeaderEntry(dst []byte, b Blob) ([]byte, error) {
	var t byte
	switch {
	case b.Type == DataBlob && !b.IsCompressed():
		t = packData
	case b.Type == TreeBlob && !b.IsCompressed():
		t = packTree
	case b.Type == DataBlob:
		t = packCompressedData
	case b.Type == TreeBlob:
		t = packCompressedTree
	default:
		return nil, fmt.Errorf("cannot pack %v", b.BlobHandle)
	}
	dst = append(dst, t)
	dst = binary.LittleEndian.AppendUint32(dst, b.Length)
	if b.IsCompressed() {
		dst = binary.LittleEndian.AppendUint32(dst, b.UncompressedLength)
	}
	return append(dst, b.ID[:]...), nil
}

// EncodeHeader returns the plaintext header for blobs, in order.
func EncodeHeader(blobs []Blob) ([]byte, error) {
	buf := make([]byte, 0, len(blobs)*compressedEntrySize)
	for _, b := range blobs {
		var err error
		if buf, err = appendHeaderEntry(buf, b); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// DecodeHeader parses a plaintext header and assigns each blob its offset,
// each starting where the previous one ended.
func DecodeHeader(hdr []byte) ([]Blob, error) {
	var blobs []Blob
	var offset uint64
	for pos := 0; pos < len(hdr); {
		var b Blob
		t := hdr[pos]
		size := plainEntrySize
		switch t {
		case packData, packTree:
		case packCompressedData, packCompressedTree:
			size = compressedEntrySize
		default:
			return nil, fmt.Errorf("header entry %d: invalid type byte %d", len(blobs), t)
		}
		if len(hdr)-pos < size {
			return nil, fmt.Errorf("header entry %d: truncated (%d of %d bytes)", len(blobs), len(hdr)-pos, size)
		}
		b.Type = DataBlob
		if t == packTree || t == packCompressedTree {
			b.Type = TreeBlob
		}
		b.Length = binary.LittleEndian.Uint32(hdr[pos+1:])
		idAt := pos + 5
		if size == compressedEntrySize {
			b.UncompressedLength = binary.LittleEndian.Uint32(hdr[pos+5:])
			idAt += 4
			if b.UncompressedLength == 0 {
				return nil, fmt.Errorf("header entry %d: compressed blob with uncompressed length 0", len(blobs))
			}
		}
		if b.Length < crypto.Overhead {
			return nil, fmt.Errorf("header entry %d: blob length %d shorter than the sealing overhead", len(blobs), b.Length)
		}
		copy(b.ID[:], hdr[idAt:idAt+32])
		if offset > 1<<32-1 {
			return nil, fmt.Errorf("header entry %d: offset beyond 4 GiB", len(blobs))
		}
		b.Offset = uint32(offset)
		offset += uint64(b.Length)
		blobs = append(blobs, b)
		pos += size
	}
	if len(blobs) == 0 {
		return nil, errors.New("header lists no blobs")
	}
	return blobs, nil
}

// PackSize is the size a pack holding blobs must have: the blobs, the
// sealed header and its 4-byte length.
func PackSize(blobs []Blob) int64 {
	var n int64
	for _, b := range blobs {
		n += int64(b.Length) + int64(entrySize(b))
	}
	return n + crypto.Overhead + 4
}

// packBuilder collects sealed blobs of one type into a pack, hashing
// (SHA-256, for the name) as bytes are appended, so the finished pack is
// never read a second time to be named. The bytes go to a spool file when
// there is one (see newSpooledPackBuilder), else to buf in memory.
type packBuilder struct {
	buf   []byte
	spool *os.File
	n     int // bytes appended so far
	blobs []Blob
	sha   hash.Hash
}

func newPackBuilder(capacity int) *packBuilder {
	return &packBuilder{buf: make([]byte, 0, capacity), sha: sha256.New()}
}

// newSpooledPackBuilder builds a pack in f, an empty file that only this
// builder and the finished pack use (it is closed by finishedPack.close).
func newSpooledPackBuilder(f *os.File) *packBuilder {
	return &packBuilder{spool: f, sha: sha256.New()}
}

// newSpoolFile creates an unnamed temporary file in os.TempDir (TMPDIR):
// its name is removed at once, so it holds only ciphertext, only while
// open, and nothing is left behind by a crash.
func newSpoolFile() (*os.File, error) {
	f, err := os.CreateTemp("", "scalr-backup-pack-")
	if err != nil {
		return nil, fmt.Errorf("pack spool file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("pack spool file: unlink %s: %w", f.Name(), err)
	}
	return f, nil
}

// add appends a sealed blob. A failed spool write leaves the builder
// unusable (the caller drops the pack).
func (p *packBuilder) add(h BlobHandle, sealed []byte, uncompressed uint32) error {
	if err := p.write(sealed); err != nil {
		return err
	}
	p.blobs = append(p.blobs, Blob{BlobHandle: h, Offset: uint32(p.n), Length: uint32(len(sealed)), UncompressedLength: uncompressed})
	p.n += len(sealed)
	return nil
}

func (p *packBuilder) write(b []byte) error {
	if p.spool != nil {
		if _, err := p.spool.Write(b); err != nil {
			return fmt.Errorf("pack spool file: write: %w", err)
		}
	} else {
		p.buf = append(p.buf, b...)
	}
	p.sha.Write(b)
	return nil
}

func (p *packBuilder) size() int { return p.n }

// discard releases the spool file of a pack that will not be finished.
func (p *packBuilder) discard() {
	if p.spool != nil {
		p.spool.Close()
		p.spool = nil
	}
}

// finishedPack is a complete pack ready to upload: in data, or in spool
// (size bytes from offset 0) when it was spooled.
type finishedPack struct {
	id      ID
	data    []byte
	spool   *os.File
	size    int64
	blobs   []Blob
	md5Once sync.Once
	md5     []byte
}

// finish appends the sealed header and its length. On error a spooled
// pack's file is closed.
func (p *packBuilder) finish(key *crypto.Key) (fp *finishedPack, err error) {
	defer func() {
		if err != nil {
			p.discard()
		}
	}()
	hdr, err := EncodeHeader(p.blobs)
	if err != nil {
		return nil, err
	}
	tail, err := key.Seal(make([]byte, 0, len(hdr)+crypto.Overhead+4), hdr)
	if err != nil {
		return nil, err
	}
	tail = binary.LittleEndian.AppendUint32(tail, uint32(len(tail)))
	if err := p.write(tail); err != nil {
		return nil, err
	}
	p.n += len(tail)
	var id ID
	copy(id[:], p.sha.Sum(nil))
	if int64(p.n) != PackSize(p.blobs) {
		return nil, fmt.Errorf("pack %s: size %d does not match its header (%d)", id.Str(), p.n, PackSize(p.blobs))
	}
	return &finishedPack{id: id, data: p.buf, spool: p.spool, size: int64(p.n), blobs: p.blobs}, nil
}

// close releases the spool file, if any; its bytes are gone with it.
func (f *finishedPack) close() {
	if f.spool != nil {
		f.spool.Close()
		f.spool = nil
	}
}

// source lets an upload retry from the first byte without copying the pack.
func (f *finishedPack) source() backend.Source {
	s := &packSource{f: f}
	if f.spool != nil {
		s.file = io.NewSectionReader(f.spool, 0, f.size)
	}
	return s
}

type packSource struct {
	f    *finishedPack
	file *io.SectionReader // nil for a pack in memory
	pos  int
}

func (s *packSource) Read(b []byte) (int, error) {
	if s.file != nil {
		return s.file.Read(b)
	}
	if s.pos >= len(s.f.data) {
		return 0, io.EOF
	}
	n := copy(b, s.f.data[s.pos:])
	s.pos += n
	return n, nil
}

func (s *packSource) Rewind() error {
	s.pos = 0
	if s.file != nil {
		_, err := s.file.Seek(0, io.SeekStart)
		return err
	}
	return nil
}

func (s *packSource) Length() int64 { return s.f.size }

// MD5 is computed on first use, on the uploader's goroutine: only backends
// that send Content-MD5 (S3) ask, and a local backend never pays for it.
// A spool file that cannot be read back yields nil (no digest); the upload
// then reads it again and fails there, naming the error.
func (s *packSource) MD5() []byte {
	s.f.md5Once.Do(func() {
		if s.f.spool == nil {
			sum := md5.Sum(s.f.data)
			s.f.md5 = sum[:]
			return
		}
		h := md5.New()
		if _, err := io.Copy(h, io.NewSectionReader(s.f.spool, 0, s.f.size)); err != nil {
			return
		}
		s.f.md5 = h.Sum(nil)
	})
	return s.f.md5
}

// SHA256 is the pack's ID: a pack file is named by the SHA-256 of its
// bytes, hashed as they were written.
func (s *packSource) SHA256() []byte {
	id := s.f.id
	return id[:]
}

// ReadPackHeader lists the blobs pack id (of size bytes, as its storage
// listing says) holds, read from its encrypted header rather than the
// index: what restic's "list blobs" and a repair rely on.
func (r *Repository) ReadPackHeader(ctx context.Context, id ID, size int64) ([]Blob, error) {
	return readPackHeader(ctx, r.be, r.key, id, size)
}

// readPackHeader loads and decodes the header of pack id, which has size
// bytes, with one ranged load in the common case. It checks the size
// formula, so a truncated or padded pack is reported.
func readPackHeader(ctx context.Context, be backend.Backend, key *crypto.Key, id ID, size int64) ([]Blob, error) {
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	name := h.String()
	if size < crypto.Overhead+4+plainEntrySize {
		return nil, corrupt(name, "pack is %d bytes, too small to hold a header", size)
	}
	tail := int64(tailEntries*compressedEntrySize + crypto.Overhead + 4)
	if tail > size {
		tail = size
	}
	buf, err := loadRange(ctx, be, h, tail, size-tail)
	if err != nil {
		return nil, err
	}
	hdrLen, err := parseHeaderLength(buf[len(buf)-4:], size)
	if err != nil {
		return nil, corrupt(name, "%w", err)
	}
	var sealed []byte
	if hdrLen+4 <= tail {
		sealed = buf[len(buf)-4-int(hdrLen) : len(buf)-4]
	} else {
		if sealed, err = loadRange(ctx, be, h, hdrLen, size-4-hdrLen); err != nil {
			return nil, err
		}
	}
	blobs, err := openHeader(key, sealed, size)
	if err != nil {
		return nil, corrupt(name, "%w", err)
	}
	return blobs, nil
}

// decodePackTail parses the header of a pack held whole in memory.
func decodePackTail(key *crypto.Key, data []byte) ([]Blob, error) {
	size := int64(len(data))
	if size < crypto.Overhead+4+plainEntrySize {
		return nil, fmt.Errorf("pack is %d bytes, too small to hold a header", size)
	}
	hdrLen, err := parseHeaderLength(data[size-4:], size)
	if err != nil {
		return nil, err
	}
	return openHeader(key, data[size-4-hdrLen:size-4], size)
}

// parseHeaderLength reads and bounds the trailing header length of a pack
// of size bytes.
func parseHeaderLength(last4 []byte, size int64) (int64, error) {
	hdrLen := int64(binary.LittleEndian.Uint32(last4))
	if hdrLen > maxHeaderSize || hdrLen+4 > size || hdrLen < crypto.Overhead+plainEntrySize {
		return 0, fmt.Errorf("header length %d invalid for a %d-byte pack", hdrLen, size)
	}
	return hdrLen, nil
}

// openHeader decrypts and decodes a sealed header and checks that it
// describes a pack of exactly size bytes.
func openHeader(key *crypto.Key, sealed []byte, size int64) ([]Blob, error) {
	plain, err := key.Open(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("decrypt header: %w", err)
	}
	blobs, err := DecodeHeader(plain)
	if err != nil {
		return nil, err
	}
	if want := PackSize(blobs); want != size {
		return nil, fmt.Errorf("pack is %d bytes but its header describes %d", size, want)
	}
	return blobs, nil
}

func loadRange(ctx context.Context, be backend.Backend, h backend.Handle, length, offset int64) ([]byte, error) {
	rd, err := be.Load(ctx, h, int(length), offset)
	if err != nil {
		return nil, fmt.Errorf("load %v [%d+%d]: %w", h, offset, length, err)
	}
	defer rd.Close()
	buf := make([]byte, length)
	if _, err := io.ReadFull(rd, buf); err != nil {
		return nil, fmt.Errorf("read %v [%d+%d]: %w", h, offset, length, err)
	}
	return buf, nil
}
