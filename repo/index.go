package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
)

// maxIndexBlobs bounds the blobs listed in one index file, so no single
// index file grows without limit.
const maxIndexBlobs = 50000

// indexEntry is a blob's place, kept compact: the pack is an offset into
// Index.packs rather than a 32-byte ID per blob.
type indexEntry struct {
	pack               uint32
	offset             uint32
	length             uint32
	uncompressedLength uint32
}

// Index maps blobs to the packs that hold them. It is safe for concurrent use.
type Index struct {
	mu      sync.RWMutex
	packs   []ID
	packPos map[ID]uint32
	blobs   map[BlobHandle]indexEntry
	// files lists the index files loaded or written.
	files map[ID]struct{}
	// skipped lists the index files left out because they are damaged
	// (see Repository.Index), with why.
	skipped map[ID]error
	// unsaved lists packs stored but not yet in any index file, with all
	// their blobs (also those a duplicate made redundant).
	unsaved []IndexPackJSON
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{packPos: map[ID]uint32{}, blobs: map[BlobHandle]indexEntry{}, files: map[ID]struct{}{}, skipped: map[ID]error{}}
}

// IndexJSON is an index file's content.
type IndexJSON struct {
	Supersedes []ID            `json:"supersedes,omitempty"`
	Packs      []IndexPackJSON `json:"packs"`
}

// IndexPackJSON is one pack in an index file.
type IndexPackJSON struct {
	ID    ID              `json:"id"`
	Blobs []IndexBlobJSON `json:"blobs"`
}

// IndexBlobJSON is one blob in an index file.
type IndexBlobJSON struct {
	ID                 ID       `json:"id"`
	Type               BlobType `json:"type"`
	Offset             uint     `json:"offset"`
	Length             uint     `json:"length"`
	UncompressedLength uint     `json:"uncompressed_length,omitempty"`
}

// Blob converts an index entry to the blob it describes.
func (b IndexBlobJSON) Blob() Blob {
	return Blob{BlobHandle: BlobHandle{ID: b.ID, Type: b.Type}, Offset: uint32(b.Offset), Length: uint32(b.Length), UncompressedLength: uint32(b.UncompressedLength)}
}

func indexBlobJSON(b Blob) IndexBlobJSON {
	return IndexBlobJSON{ID: b.ID, Type: b.Type, Offset: uint(b.Offset), Length: uint(b.Length), UncompressedLength: uint(b.UncompressedLength)}
}

// DecodeIndex parses an index file's plaintext, in the current format or
// the early one (a bare list of packs).
func DecodeIndex(plain []byte) (*IndexJSON, error) {
	var ij IndexJSON
	trimmed := bytes.TrimLeft(plain, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(plain, &ij.Packs); err != nil {
			return nil, fmt.Errorf("decode index (old format): %w", err)
		}
	} else if err := json.Unmarshal(plain, &ij); err != nil {
		return nil, fmt.Errorf("decode index: %w", err)
	}
	for _, p := range ij.Packs {
		for _, b := range p.Blobs {
			if b.Type != DataBlob && b.Type != TreeBlob {
				return nil, fmt.Errorf("pack %s: blob %s has no type", p.ID.Str(), b.ID.Str())
			}
			if b.Length < cryptoOverhead || b.Length > 1<<32-1 || b.Offset > 1<<32-1 || b.UncompressedLength > 1<<32-1 {
				return nil, fmt.Errorf("pack %s: blob %s has offset %d, length %d out of range", p.ID.Str(), b.ID.Str(), b.Offset, b.Length)
			}
		}
	}
	return &ij, nil
}

// add records the blobs of one pack. A blob already known keeps its first
// location (a duplicate is harmless; prune removes it).
func (idx *Index) add(pack ID, blobs []Blob) {
	idx.mu.Lock()
	defer idx.mu.Unlock()
	idx.addLocked(pack, blobs)
}

func (idx *Index) addLocked(pack ID, blobs []Blob) {
	pos, ok := idx.packPos[pack]
	if !ok {
		pos = uint32(len(idx.packs))
		idx.packs = append(idx.packs, pack)
		idx.packPos[pack] = pos
	}
	for _, b := range blobs {
		if _, dup := idx.blobs[b.BlobHandle]; dup {
			continue
		}
		idx.blobs[b.BlobHandle] = indexEntry{pack: pos, offset: b.Offset, length: b.Length, uncompressedLength: b.UncompressedLength}
	}
}

// addStored records a pack just stored in this session, to be written to
// the next index file.
func (idx *Index) addStored(pack ID, blobs []Blob) {
	p := IndexPackJSON{ID: pack, Blobs: make([]IndexBlobJSON, len(blobs))}
	for i, b := range blobs {
		p.Blobs[i] = indexBlobJSON(b)
	}
	idx.mu.Lock()
	defer idx.mu.Unlock()
	idx.addLocked(pack, blobs)
	idx.unsaved = append(idx.unsaved, p)
}

// addFile merges a decoded index file.
func (idx *Index) addFile(id ID, ij *IndexJSON) {
	idx.mu.Lock()
	defer idx.mu.Unlock()
	for _, p := range ij.Packs {
		blobs := make([]Blob, len(p.Blobs))
		for i, b := range p.Blobs {
			blobs[i] = b.Blob()
		}
		idx.addLocked(p.ID, blobs)
	}
	idx.files[id] = struct{}{}
}

// Lookup returns where blob h is stored.
func (idx *Index) Lookup(h BlobHandle) (PackedBlob, bool) {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	e, ok := idx.blobs[h]
	if !ok {
		return PackedBlob{}, false
	}
	return PackedBlob{
		Blob:   Blob{BlobHandle: h, Offset: e.offset, Length: e.length, UncompressedLength: e.uncompressedLength},
		PackID: idx.packs[e.pack],
	}, true
}

// Has reports whether blob h is indexed.
func (idx *Index) Has(h BlobHandle) bool {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	_, ok := idx.blobs[h]
	return ok
}

// Len is the number of distinct blobs.
func (idx *Index) Len() int {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	return len(idx.blobs)
}

// Packs returns every indexed pack ID.
func (idx *Index) Packs() []ID {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	return append([]ID(nil), idx.packs...)
}

// PackBlobs returns the indexed blobs of every pack, sorted by offset. It
// is for checks and inspection; it walks the whole index.
func (idx *Index) PackBlobs() map[ID][]Blob {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	out := make(map[ID][]Blob, len(idx.packs))
	for h, e := range idx.blobs {
		p := idx.packs[e.pack]
		out[p] = append(out[p], Blob{BlobHandle: h, Offset: e.offset, Length: e.length, UncompressedLength: e.uncompressedLength})
	}
	for _, bs := range out {
		sort.Slice(bs, func(i, j int) bool { return bs[i].Offset < bs[j].Offset })
	}
	return out
}

// Files returns the IDs of index files loaded or written.
func (idx *Index) Files() []ID {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	out := make([]ID, 0, len(idx.files))
	for id := range idx.files {
		out = append(out, id)
	}
	return out
}

// Index returns the repository's index, loading every index file on first
// use with one LIST of index/. A damaged index file (or one the storage
// refuses for good) is left out and reported to Options.Skipped, as one
// bad object must not block backups and restores: the blobs only it lists
// count as missing (a backup stores them again; a restore that needs them
// fails naming them), and check reports the file.
func (r *Repository) Index(ctx context.Context) (*Index, error) {
	r.idxOnce.Do(func() {
		idx := NewIndex()
		ids, err := r.listIndexFiles(ctx)
		if err != nil {
			r.idxErr = err
			return
		}
		r.idxErr = forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
			ij, err := r.loadIndexFile(ctx, id)
			if err != nil {
				return idx.skip(ctx, id, err)
			}
			idx.addFile(id, ij)
			return nil
		})
		if r.idxErr == nil {
			r.reportSkipped(idx.Skipped()...)
		}
		r.idx = idx
	})
	return r.idx, r.idxErr
}

// ReloadIndex brings the loaded index up to date with the repository: it
// lists the index files again and loads those it has not seen yet (index
// files are never changed, only added and removed), adding their packs to
// the index in use. Another process may have added a snapshot since the
// index was loaded; its blobs are in index files this one lacks. It returns
// how many index files were added. Concurrent callers share one reload: a
// caller that asks while a reload runs waits for it and takes its result.
//
// Readers call it themselves (LoadBlob, OpenFile, and so LoadTree and
// FindNode) before reporting a blob missing, as restic does; a caller only
// needs it to see new blobs ahead of that.
func (r *Repository) ReloadIndex(ctx context.Context) (int, error) {
	idx, err := r.Index(ctx)
	if err != nil {
		return 0, err
	}
	started := r.reloadStarts.Load()
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.reloadStarts.Load() != started {
		// A reload started after this call and has finished: its listing
		// is newer than whatever this caller missed.
		return 0, nil
	}
	r.reloadStarts.Add(1)
	ids, err := r.listIndexFiles(ctx)
	if err != nil {
		return 0, fmt.Errorf("reload index: %w", err)
	}
	idx.mu.RLock()
	var fresh []ID
	for _, id := range ids {
		if _, ok := idx.files[id]; !ok && idx.skipped[id] == nil {
			fresh = append(fresh, id)
		}
	}
	idx.mu.RUnlock()
	err = forEachParallel(ctx, fresh, 8, func(ctx context.Context, id ID) error {
		ij, err := r.loadIndexFile(ctx, id)
		if err != nil {
			return err
		}
		idx.addFile(id, ij)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reload index: %w", err)
	}
	return len(fresh), nil
}

// lookupFresh finds blob h in the index, reloading the index once when it
// is not there (see ReloadIndex). A blob missing after the reload is
// ErrBlobMissing.
func (r *Repository) lookupFresh(ctx context.Context, h BlobHandle) (PackedBlob, error) {
	idx, err := r.Index(ctx)
	if err != nil {
		return PackedBlob{}, err
	}
	if pb, ok := idx.Lookup(h); ok {
		return pb, nil
	}
	if _, err := r.ReloadIndex(ctx); err != nil {
		return PackedBlob{}, fmt.Errorf("%v is not in the loaded index, and reloading it failed: %w", h, err)
	}
	if pb, ok := idx.Lookup(h); ok {
		return pb, nil
	}
	return PackedBlob{}, idx.missing(h)
}

// listIndexFiles lists the index files, in ID order.
func (r *Repository) listIndexFiles(ctx context.Context) ([]ID, error) {
	var ids []ID
	err := r.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		if id, err := ParseID(fi.Name); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	sortIDs(ids)
	return ids, nil
}

// loadIndexFile loads, verifies and decodes one index file; a file that
// does not decode is a CorruptError naming it.
func (r *Repository) loadIndexFile(ctx context.Context, id ID) (*IndexJSON, error) {
	plain, err := r.loadUnpacked(ctx, backend.IndexFile, id)
	if err != nil {
		return nil, err
	}
	ij, err := DecodeIndex(plain)
	if err != nil {
		return nil, corrupt("index/"+id.String(), "%w", err)
	}
	return ij, nil
}

// saveIndex writes every pack stored in this session but not yet indexed
// into new index files (about maxIndexBlobs blobs each; a pack is never
// split). Packs whose index file could not be saved stay pending, so a
// later Flush retries them and nothing deduplicates against blobs that no
// index file names.
func (r *Repository) saveIndex(ctx context.Context, idx *Index) error {
	idx.mu.Lock()
	unsaved := idx.unsaved
	idx.unsaved = nil
	idx.mu.Unlock()
	done := 0
	var cur IndexJSON
	count := 0
	flush := func(upto int) error {
		if len(cur.Packs) == 0 {
			return nil
		}
		id, err := r.saveJSON(ctx, backend.IndexFile, &cur)
		if err != nil {
			return err
		}
		idx.mu.Lock()
		idx.files[id] = struct{}{}
		idx.mu.Unlock()
		cur, count, done = IndexJSON{}, 0, upto
		return nil
	}
	var err error
	for i, p := range unsaved {
		cur.Packs = append(cur.Packs, p)
		count += len(p.Blobs)
		if count >= maxIndexBlobs {
			if err = flush(i + 1); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = flush(len(unsaved))
	}
	if err != nil {
		idx.mu.Lock()
		idx.unsaved = append(unsaved[done:len(unsaved):len(unsaved)], idx.unsaved...)
		idx.mu.Unlock()
	}
	return err
}
