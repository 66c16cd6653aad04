package repo

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
)

// RepairIndexOptions configure RepairIndex.
type RepairIndexOptions struct {
	// ReadAllPacks reads every pack's header, even for packs a readable
	// index file already describes with the right size.
	ReadAllPacks bool
	// Progress receives a line per step.
	Progress func(string)
}

// RepairIndexReport says what RepairIndex did.
type RepairIndexReport struct {
	// Packs are the packs the new index describes; PacksRead those whose
	// header was read for it.
	Packs     int `json:"packs"`
	PacksRead int `json:"packs_read"`
	// MissingPacks were named by an old index file but are not stored;
	// UnreadablePacks are stored but their header cannot be read (damaged):
	// neither is in the new index.
	MissingPacks    []ID `json:"missing_packs,omitempty"`
	UnreadablePacks []ID `json:"unreadable_packs,omitempty"`
	// UnreadableIndex are old index files that could not be read.
	UnreadableIndex []ID `json:"unreadable_index,omitempty"`
	// IndexWritten are the new index files; IndexRemoved the old ones
	// deleted after the new ones were saved.
	IndexWritten []ID `json:"index_written"`
	IndexRemoved []ID `json:"index_removed"`
	// Deferred are old index files the storage refused to delete (Object
	// Lock retention, bucket lock rules, no delete permission): they stay
	// beside the new index, which restic check calls non-critical, and a
	// later prune or repair removes them.
	Deferred Deferred `json:"deferred"`
}

// RepairIndex rebuilds the index from the packs, as restic's `repair index`
// does: under an exclusive lock, every stored pack is described by a new
// set of index files (from the old index where it is readable and agrees
// with the pack's size, else from the pack's own header), and only then
// are the old index files deleted. A crash in between leaves both sets,
// which describe the same packs (duplicates, which check calls
// non-critical); the repository stays readable throughout. Packs that are
// missing or whose header is damaged are left out of the new index and
// reported: the snapshots that need their blobs are then reported by check.
func (r *Repository) RepairIndex(ctx context.Context, opts RepairIndexOptions) (*RepairIndexReport, error) {
	say := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	ctx, done, err := r.Hold(ctx, true, "repair index")
	if err != nil {
		return nil, err
	}
	defer done()

	rep := &RepairIndexReport{IndexWritten: []ID{}, IndexRemoved: []ID{}}
	say("loading indexes")
	oldFiles, err := r.listIndexFiles(ctx)
	if err != nil {
		return nil, err
	}
	known, err := r.repairLoadIndex(ctx, oldFiles, rep, say)
	if err != nil {
		return nil, err
	}
	say("listing packs")
	stored, err := r.storedPacks(ctx)
	if err != nil {
		return nil, err
	}
	for id := range known {
		if _, ok := stored[id]; !ok {
			rep.MissingPacks = append(rep.MissingPacks, id)
		}
	}
	sortIDs(rep.MissingPacks)
	packs, err := r.repairDescribePacks(ctx, known, stored, opts.ReadAllPacks, rep, say)
	if err != nil {
		return nil, err
	}

	say("saving the new index")
	idx, err := r.repairSaveIndex(ctx, packs, rep)
	if err != nil {
		return rep, err
	}

	say("removing %d old index files", len(oldFiles))
	var deferMu sync.Mutex
	for _, id := range oldFiles {
		if slices.Contains(rep.IndexWritten, id) {
			continue // the same content as a new one
		}
		gone, err := r.removeOrDefer(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}, 0, &deferMu, &rep.Deferred)
		if err != nil {
			return rep, fmt.Errorf("the new index is saved, but removing the old index/%s failed: %w (duplicates are harmless; run repair index again)", id, err)
		}
		if gone {
			rep.IndexRemoved = append(rep.IndexRemoved, id)
		}
	}
	rep.Deferred.sort()
	r.resetIndex(idx)
	return rep, nil
}

// repairLoadIndex reads what the readable old index files say of each
// pack (the first file naming a pack wins); unreadable ones go to rep.
func (r *Repository) repairLoadIndex(ctx context.Context, files []ID, rep *RepairIndexReport, say func(string, ...any)) (map[ID][]Blob, error) {
	known := map[ID][]Blob{}
	for _, id := range files {
		ij, err := r.loadIndexFile(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			rep.UnreadableIndex = append(rep.UnreadableIndex, id)
			say("index/%s cannot be read, its packs' headers are read instead: %v", id, err)
			continue
		}
		for _, p := range ij.Packs {
			if _, seen := known[p.ID]; seen {
				continue
			}
			bs := make([]Blob, len(p.Blobs))
			for i, b := range p.Blobs {
				bs[i] = b.Blob()
			}
			known[p.ID] = bs
		}
	}
	return known, nil
}

// storedPacks lists the packs in data/ with their sizes.
func (r *Repository) storedPacks(ctx context.Context) (map[ID]int64, error) {
	stored := map[ID]int64{}
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := ParseID(fi.Name); err == nil {
			stored[id] = fi.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	return stored, nil
}

// repairDescribePacks gives every stored pack its blobs: from the old
// index when it agrees with the pack's size (and not readAll), else from
// the pack's header. Packs whose header cannot be read go to rep and are
// left out.
func (r *Repository) repairDescribePacks(ctx context.Context, known map[ID][]Blob, stored map[ID]int64, readAll bool, rep *RepairIndexReport, say func(string, ...any)) (map[ID][]Blob, error) {
	ids := make([]ID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	sortIDs(ids)
	var toRead []ID
	packs := map[ID][]Blob{}
	for _, id := range ids {
		if bs, ok := known[id]; ok && !readAll && PackSize(bs) == stored[id] {
			packs[id] = bs
			continue
		}
		toRead = append(toRead, id)
	}
	say("reading the headers of %d packs", len(toRead))
	for i, id := range toRead {
		bs, err := readPackHeader(ctx, r.be, r.key, id, stored[id])
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			rep.UnreadablePacks = append(rep.UnreadablePacks, id)
			say("data/%s: header cannot be read, left out of the index: %v", id, err)
			continue
		}
		packs[id] = bs
		rep.PacksRead++
		if (i+1)%100 == 0 {
			say("read %d of %d pack headers", i+1, len(toRead))
		}
	}
	return packs, nil
}

// repairSaveIndex writes packs as new index files (each at most
// maxIndexBlobs blobs), in pack ID order, and returns the in-memory index
// they make.
func (r *Repository) repairSaveIndex(ctx context.Context, packs map[ID][]Blob, rep *RepairIndexReport) (*Index, error) {
	var cur IndexJSON
	count := 0
	flush := func() error {
		if len(cur.Packs) == 0 {
			return nil
		}
		id, err := r.saveJSON(ctx, backend.IndexFile, &cur)
		if err != nil {
			return fmt.Errorf("save the new index: %w; the old index files are untouched", err)
		}
		rep.IndexWritten = append(rep.IndexWritten, id)
		cur, count = IndexJSON{}, 0
		return nil
	}
	kept := make([]ID, 0, len(packs))
	for id := range packs {
		kept = append(kept, id)
	}
	sortIDs(kept)
	idx := NewIndex()
	for _, id := range kept {
		bs := slices.Clone(packs[id])
		sort.Slice(bs, func(i, j int) bool { return bs[i].Offset < bs[j].Offset })
		p := IndexPackJSON{ID: id}
		for _, b := range bs {
			p.Blobs = append(p.Blobs, indexBlobJSON(b))
		}
		cur.Packs = append(cur.Packs, p)
		count += len(bs)
		idx.add(id, bs)
		if count >= maxIndexBlobs {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	rep.Packs = len(kept)
	for _, id := range rep.IndexWritten {
		idx.files[id] = struct{}{}
	}
	return idx, nil
}
