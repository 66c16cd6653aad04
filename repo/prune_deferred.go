package repo

// Deletions the storage refuses: S3 Object Lock retention, Cloudflare R2
// bucket lock rules, or credentials that may not delete. Forget and prune
// defer them instead of failing, keep the repository consistent for restic
// (no index file ever names a pack that is gone, and no pack is left out
// of every index because its deletion was refused), and report what they
// deferred and until when. A later prune tries again.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// DeferredFile is a file whose deletion the storage refused; it stays until
// a later run removes it.
type DeferredFile struct {
	// Object names it as the storage does: "data/1a/1a2b…", "index/…",
	// "snapshots/…".
	Object string `json:"object"`
	// Size is its stored size in bytes (0 when not known).
	Size int64 `json:"size"`
	// Until is when its retention ends, when the storage says (S3 Object
	// Lock); absent when unknown (bucket lock rules, no delete
	// permission).
	Until time.Time `json:"until,omitzero"`
}

// Deferred sums deferred deletions for reports.
type Deferred struct {
	// Files and Size count the deferred files and their bytes.
	Files int    `json:"files"`
	Size  uint64 `json:"size"`
	// Until is the latest known end of a retention among them: by then
	// every deletion with a known end can go through. UnknownUntil counts
	// those whose end the storage does not tell.
	Until        time.Time `json:"until,omitzero"`
	UnknownUntil int       `json:"unknown_until"`
	// List is every deferred file, sorted by name.
	List []DeferredFile `json:"list,omitempty"`
}

// add records one deferred file.
func (d *Deferred) add(f DeferredFile) {
	d.Files++
	d.Size += uint64(max(f.Size, 0))
	if f.Until.IsZero() {
		d.UnknownUntil++
	} else if f.Until.After(d.Until) {
		d.Until = f.Until
	}
	d.List = append(d.List, f)
}

func (d *Deferred) sort() {
	sort.Slice(d.List, func(i, j int) bool { return d.List[i].Object < d.List[j].Object })
}

// String says it in one sentence for the CLI and logs.
func (d *Deferred) String() string {
	if d == nil || d.Files == 0 {
		return "no deletion deferred"
	}
	what := fmt.Sprintf("%d deletions", d.Files)
	if d.Files == 1 {
		what = "1 deletion"
	}
	if d.Size > 0 {
		what += fmt.Sprintf(" (%d bytes)", d.Size)
	}
	s := what + " deferred: the storage refuses them"
	switch {
	case d.Until.IsZero():
		s += " (retention end unknown: bucket lock rule or no delete permission)"
	case d.UnknownUntil > 0:
		s += fmt.Sprintf(" until %s at the latest for %d of them, %d with an unknown end", d.Until.UTC().Format(time.RFC3339), d.Files-d.UnknownUntil, d.UnknownUntil)
	default:
		s += " until " + d.Until.UTC().Format(time.RFC3339) + " at the latest"
	}
	return s + "; a later prune retries them"
}

// retentionProbe asks the storage for retention ends, and stops asking
// once the storage says it keeps none (a local folder, a bucket without
// Object Lock).
type retentionProbe struct {
	r           *Repository
	now         time.Time
	mu          sync.Mutex
	unsupported bool
}

// lockedUntil returns h's retention end when it lies after now, zero
// otherwise (no retention, expired, unsupported, or the file is gone).
func (p *retentionProbe) lockedUntil(ctx context.Context, h backend.Handle) (time.Time, error) {
	p.mu.Lock()
	off := p.unsupported
	p.mu.Unlock()
	if off {
		return time.Time{}, nil
	}
	until, err := backend.RetainUntil(ctx, p.r.be, h)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		p.mu.Lock()
		p.unsupported = true
		p.mu.Unlock()
		return time.Time{}, nil
	case errors.Is(err, backend.ErrNotExist):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("retention of %v: %w", h, err)
	}
	if until.After(p.now) {
		return until, nil
	}
	return time.Time{}, nil
}

// lockedFiles asks lockedUntil for every id of type t, 8 at a time, and
// returns those still locked.
func (p *retentionProbe) lockedFiles(ctx context.Context, t backend.FileType, ids []ID) (map[ID]time.Time, error) {
	locked := map[ID]time.Time{}
	var mu sync.Mutex
	err := forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		until, err := p.lockedUntil(ctx, backend.Handle{Type: t, Name: id.String()})
		if err != nil || until.IsZero() {
			return err
		}
		mu.Lock()
		locked[id] = until
		mu.Unlock()
		return nil
	})
	return locked, err
}

// prunePlanDeferred moves what prune cannot delete now out of remove and
// repack, before anything is written, so that the new index is right the
// first time:
//
//   - an old index file still under retention stays, so the packs it lists
//     stay too (deleting one would leave an index naming a missing pack),
//     and the new index does not list them again (a pack in two index
//     files is a finding of restic check);
//   - a pack still under retention stays and stays indexed, unrepacked.
//
// Without retention information (local, plain bucket) nothing moves.
func (r *Repository) prunePlanDeferred(ctx context.Context, indexFiles []ID, inFile map[ID][]ID, remove, repack, keep []*packUsage, stats *PruneStats) (*deferPlan, error) {
	var (
		newRemove, newRepack, newKeep []*packUsage
		deleteIndex                   []ID
		pinned                        map[ID]bool
		pinnedKept                    int
		def                           = &Deferred{}
	)
	p := &retentionProbe{r: r, now: time.Now()}
	lockedIdx, err := p.lockedFiles(ctx, backend.IndexFile, indexFiles)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	pinned = map[ID]bool{}
	pinUntil := map[ID]time.Time{}
	for _, id := range indexFiles {
		until, locked := lockedIdx[id]
		if !locked {
			deleteIndex = append(deleteIndex, id)
			continue
		}
		def.add(DeferredFile{Object: backend.Handle{Type: backend.IndexFile, Name: id.String()}.String(), Until: until})
		for _, pack := range inFile[id] {
			pinned[pack] = true
			if until.After(pinUntil[pack]) {
				pinUntil[pack] = until
			}
		}
	}
	// The packs whose deletion is planned and that no locked index pins:
	// are they locked themselves?
	var ask []ID
	for _, u := range append(append([]*packUsage(nil), remove...), repack...) {
		if !pinned[u.id] {
			ask = append(ask, u.id)
		}
	}
	lockedPacks, err := p.lockedFiles(ctx, backend.PackFile, ask)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	// deferred reports whether u must stay, and records it if so: listed
	// by a locked index file, or locked itself. An unpinned one stays
	// indexed as it is (in newKeep).
	deferred := func(u *packUsage) bool {
		until, locked := pinUntil[u.id], pinned[u.id]
		if !locked {
			until, locked = lockedPacks[u.id]
		}
		if !locked {
			return false
		}
		def.add(DeferredFile{Object: packObject(u.id), Size: u.storedSize, Until: until})
		if pinned[u.id] {
			// Not in the kept list the caller sums, yet it remains.
			stats.RemainingSize += uint64(u.storedSize)
		} else {
			newKeep = append(newKeep, u)
		}
		return true
	}
	for _, u := range remove {
		if !deferred(u) {
			newRemove = append(newRemove, u)
			continue
		}
		stats.RemoveBlobs -= len(u.blobs)
		stats.RemoveSize -= uint64(u.storedSize)
	}
	for _, u := range repack {
		if !deferred(u) {
			newRepack = append(newRepack, u)
			continue
		}
		// Rewriting its blobs elsewhere would free nothing while the
		// pack itself must stay.
		stats.RepackBlobs -= u.usedBlobs
		stats.RepackSize -= u.used
		stats.RemoveSize -= u.unused
		stats.RemoveBlobs -= len(u.blobs) - u.usedBlobs
	}
	for _, u := range keep {
		if !pinned[u.id] {
			newKeep = append(newKeep, u)
			continue
		}
		pinnedKept++
		stats.RemainingSize += uint64(u.storedSize)
	}
	p.mu.Lock()
	known := !p.unsupported
	p.mu.Unlock()
	return &deferPlan{remove: newRemove, repack: newRepack, keep: newKeep, deleteIndex: deleteIndex,
		pinned: pinned, pinnedKept: pinnedKept, deferred: def, retentionKnown: known}, nil
}

// deferPlan is prunePlanDeferred's outcome.
type deferPlan struct {
	// remove and repack are what can go now; keep is what the new index
	// lists besides the repacked blobs (kept packs and deferred ones no
	// locked index file lists).
	remove, repack, keep []*packUsage
	// deleteIndex are the old index files not under retention.
	deleteIndex []ID
	// pinned are the packs a locked index file lists; pinnedKept counts
	// the kept ones among them.
	pinned     map[ID]bool
	pinnedKept int
	deferred   *Deferred
	// retentionKnown is whether the storage told retention ends.
	retentionKnown bool
}

// deferAll records every planned deletion as deferred with an unknown end:
// the storage refuses deletions wholesale, so prune writes nothing.
func (r *Repository) deferAll(def *Deferred, stats *PruneStats, plan *deferPlan, remove, repack []*packUsage, unreferenced []ID, stored map[ID]int64) {
	for _, id := range plan.deleteIndex {
		def.add(DeferredFile{Object: backend.Handle{Type: backend.IndexFile, Name: id.String()}.String()})
	}
	for _, u := range append(append([]*packUsage(nil), remove...), repack...) {
		def.add(DeferredFile{Object: packObject(u.id), Size: u.storedSize})
	}
	for _, id := range unreferenced {
		def.add(DeferredFile{Object: packObject(id), Size: stored[id]})
	}
	plan.deleteIndex = nil
	stats.RemoveBlobs, stats.RemoveSize, stats.RepackBlobs, stats.RepackSize = 0, 0, 0, 0
	stats.PacksRemove, stats.PacksRepack, stats.PacksUnreferenced = 0, 0, 0
}

// packObject is the storage name of a pack.
func packObject(id ID) string {
	return backend.Handle{Type: backend.PackFile, Name: id.String()}.String()
}

// removeOrDefer removes one file; a refused deletion is recorded in def
// (with size) instead of being an error. It reports whether the file is
// gone.
func (r *Repository) removeOrDefer(ctx context.Context, h backend.Handle, size int64, mu *sync.Mutex, def *Deferred) (bool, error) {
	err := r.be.Remove(ctx, h)
	if err == nil || errors.Is(err, backend.ErrNotExist) {
		return true, nil
	}
	if until, ok := backend.RefusedUntil(err); ok {
		mu.Lock()
		def.add(DeferredFile{Object: h.String(), Size: size, Until: until})
		mu.Unlock()
		return false, nil
	}
	return false, fmt.Errorf("remove %v: %w", h, err)
}

// deleteProbeName is the object probeDeletes writes and removes. It is not
// 64 hex digits, so restic and this library skip it when listing index/.
const deleteProbeName = "scalr-backup-delete-probe"

// probeDeletes finds out, before prune writes anything, whether the storage
// refuses deletions under index/ although it keeps no per-object retention
// (a bucket lock rule, credentials that may not delete): then prune could
// delete no old index file, and a new index would list every kept pack a
// second time. It writes a small object there and deletes it again; the
// object has a fixed name, so a refused probe is overwritten by the next
// one instead of piling up. It reports whether deletes are refused, and
// why.
func (r *Repository) probeDeletes(ctx context.Context) (bool, error) {
	h := backend.Handle{Type: backend.IndexFile, Name: deleteProbeName}
	err := r.be.Save(ctx, h, backend.BytesSource([]byte("scalr-backup prune: may this storage delete under index/?\n")))
	if errors.Is(err, fs.ErrExist) {
		// A backend that does not replace files, and an earlier probe
		// that could not be deleted: try that one.
		err = nil
	}
	if err != nil {
		if backend.IsPermanent(err) && !errors.Is(err, backend.ErrNotExist) {
			// An overwrite refused (an R2 lock rule keeps the last
			// probe): deletions are refused too.
			return true, err
		}
		return false, nil // cannot tell; prune goes on and defers what is refused
	}
	err = r.be.Remove(ctx, h)
	if _, refused := backend.RefusedUntil(err); refused {
		return true, err
	}
	return false, nil
}
