package repo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// PruneOptions tune a prune.
type PruneOptions struct {
	// MaxUnused is the unused space tolerated after pruning, as restic's
	// --max-unused: "5%" (the default), "unlimited", or a byte count.
	MaxUnused string
	DryRun    bool
	// LeftoverAge is how old a temporary file an interrupted write left
	// must be before it is removed (0 means DefaultLeftoverAge).
	LeftoverAge time.Duration
	// Progress, when set, receives one line per phase.
	Progress func(msg string)
}

// PruneStats count blobs and bytes (stored sizes) by what prune does.
type PruneStats struct {
	UsedBlobs      int    `json:"used_blobs"`
	UnusedBlobs    int    `json:"unused_blobs"`
	DuplicateBlobs int    `json:"duplicate_blobs"`
	UsedSize       uint64 `json:"used_size"`
	UnusedSize     uint64 `json:"unused_size"`
	DuplicateSize  uint64 `json:"duplicate_size"`

	PacksTotal        int `json:"packs_total"`
	PacksKeep         int `json:"packs_keep"`
	PacksRepack       int `json:"packs_repack"`
	PacksRemove       int `json:"packs_remove"`
	PacksUnreferenced int `json:"packs_unreferenced"`
	// RepackBlobs/RepackSize are what is rewritten; RemoveSize is what is
	// deleted outright (unused packs and the unused part of repacked ones).
	RepackBlobs         int    `json:"repack_blobs"`
	RepackSize          uint64 `json:"repack_size"`
	RemoveBlobs         int    `json:"remove_blobs"`
	RemoveSize          uint64 `json:"remove_size"`
	UnreferencedSize    uint64 `json:"unreferenced_size"`
	RemainingSize       uint64 `json:"remaining_size"`
	RemainingUnusedSize uint64 `json:"remaining_unused_size"`
	IndexFilesReplaced  int    `json:"index_files_replaced"`
	IndexFilesWritten   int    `json:"index_files_written"`
	// IndexFilesDamaged counts damaged index files replaced by reading
	// the headers of the PacksRecovered packs they listed.
	IndexFilesDamaged     int    `json:"index_files_damaged"`
	PacksRecovered        int    `json:"packs_recovered"`
	MaxUnusedBytesAllowed uint64 `json:"max_unused_bytes_allowed"`
	// LeftoversRemoved counts the temporary files of interrupted writes
	// removed (LeftoverSize bytes), LeftoversKept those not old enough.
	LeftoversRemoved int    `json:"leftovers_removed"`
	LeftoverSize     uint64 `json:"leftover_size"`
	LeftoversKept    int    `json:"leftovers_kept"`
	// Deferred are the deletions the storage refused (Object Lock
	// retention, bucket lock rules, no delete permission): those files
	// stay, the repository stays consistent, and a later prune retries.
	// The counts above do not include them.
	Deferred Deferred `json:"deferred"`
	// PacksDeleted counts the packs actually deleted.
	PacksDeleted int `json:"packs_deleted"`
}

// ValidateMaxUnused checks a PruneOptions.MaxUnused value without pruning,
// so that a caller can refuse it before any work (forget --prune before
// forgetting).
func ValidateMaxUnused(s string) error {
	_, err := maxUnusedFunc(s)
	return err
}

// maxUnusedFunc parses MaxUnused (restic's --max-unused) into a limit on
// unused bytes given the used bytes: p% of the repository after pruning means
// p/(100-p) times the used size.
func maxUnusedFunc(s string) (func(used uint64) uint64, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		s = "5%"
		fallthrough
	case strings.HasSuffix(s, "%"):
		p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || p < 0 || p >= 100 {
			return nil, fmt.Errorf("max unused %q: want a percentage from 0 to below 100", s)
		}
		return func(used uint64) uint64 { return uint64(p / (100 - p) * float64(used)) }, nil
	case s == "unlimited":
		return func(uint64) uint64 { return math.MaxUint64 }, nil
	}
	n, err := parseByteSize(s)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("max unused %q: want a percentage, a byte count like 500M, or unlimited", s)
	}
	return func(uint64) uint64 { return uint64(n) }, nil
}

// packUsage is one pack's blobs and how many of them are needed.
type packUsage struct {
	id         ID
	blobs      []Blob
	owned      []bool // the blob is the copy kept for a used blob
	used       uint64
	unused     uint64
	usedBlobs  int
	hasTree    bool
	hasData    bool
	storedSize int64
}

// loadIndexFiles reads every index file and returns the IDs of all of them
// (damaged ones included), the complete blob list of every pack the intact
// ones index (duplicates included, which the merged Index drops), the
// packs each intact file lists, and the damaged index files, left out.
func (r *Repository) loadIndexFiles(ctx context.Context) ([]ID, map[ID][]Blob, map[ID][]ID, []SkippedFile, error) {
	files, err := r.listIndexFiles(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	packs := map[ID][]Blob{}
	inFile := map[ID][]ID{}
	var damaged []SkippedFile
	for _, id := range files {
		ij, err := r.loadIndexFile(ctx, id)
		if err != nil {
			if skippable(ctx, err) {
				damaged = append(damaged, SkippedFile{Handle: backend.Handle{Type: backend.IndexFile, Name: id.String()}, Err: err})
				continue
			}
			return nil, nil, nil, nil, err
		}
		for _, p := range ij.Packs {
			inFile[id] = append(inFile[id], p.ID)
			if _, seen := packs[p.ID]; seen {
				continue
			}
			bs := make([]Blob, len(p.Blobs))
			for i, b := range p.Blobs {
				bs[i] = b.Blob()
			}
			sort.Slice(bs, func(i, j int) bool { return bs[i].Offset < bs[j].Offset })
			packs[p.ID] = bs
		}
	}
	return files, packs, inFile, damaged, nil
}

// listPacks lists data/: every stored pack with its size.
func (r *Repository) listPacks(ctx context.Context) (map[ID]int64, error) {
	stored := map[ID]int64{}
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err == nil {
			stored[id] = fi.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	return stored, nil
}

// readHeaders reads the headers of the given stored packs (ID to size), 8
// at a time, and returns their blobs sorted by offset. A pack whose header
// is damaged, or that the storage refuses for good, is returned in bad
// with why; any other failure stops it.
func (r *Repository) readHeaders(ctx context.Context, packs map[ID]int64) (found map[ID][]Blob, bad map[ID]error, err error) {
	found, bad = map[ID][]Blob{}, map[ID]error{}
	var mu sync.Mutex
	err = forEachParallel(ctx, checkSortedIDs(packs), 8, func(ctx context.Context, id ID) error {
		blobs, err := readPackHeader(ctx, r.be, r.key, id, packs[id])
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			sort.Slice(blobs, func(i, j int) bool { return blobs[i].Offset < blobs[j].Offset })
			found[id] = blobs
		case skippable(ctx, err) || errors.Is(err, backend.ErrNotExist) && ctx.Err() == nil:
			bad[id] = err
		default:
			return err
		}
		return nil
	})
	return found, bad, err
}

// UsedBlobs walks every snapshot's trees and returns every blob they need.
// A snapshot file that cannot be read makes it fail with a
// DamagedSnapshotsError: what that snapshot needs is unknown.
func (r *Repository) UsedBlobs(ctx context.Context) (map[BlobHandle]struct{}, error) {
	snaps, skipped, err := r.LoadSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		return nil, &DamagedSnapshotsError{Op: "prune", Skipped: skipped}
	}
	return r.usedBlobsOf(ctx, snaps)
}

// usedBlobsOf walks the trees of snaps and returns every blob they need.
func (r *Repository) usedBlobsOf(ctx context.Context, snaps []*Snapshot) (map[BlobHandle]struct{}, error) {
	used := map[BlobHandle]struct{}{}
	var visit func(id ID, where string) error
	visit = func(id ID, where string) error {
		h := BlobHandle{ID: id, Type: TreeBlob}
		if _, ok := used[h]; ok {
			return nil
		}
		used[h] = struct{}{}
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		for _, n := range t.Nodes {
			for _, c := range n.Content {
				used[BlobHandle{ID: c, Type: DataBlob}] = struct{}{}
			}
			if n.Subtree != nil {
				if err := visit(*n.Subtree, where+"/"+n.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, sn := range snaps {
		if err := visit(*sn.Tree, "snapshot "+sn.ID.Str()); err != nil {
			return nil, err
		}
	}
	return used, nil
}

// Prune deletes what no snapshot needs: packs with no used blob are
// removed, packs with enough unused space are rewritten, and a new index
// replaces the old one. It holds an exclusive lock throughout. It plans
// first (reads only: the index, the packs' list, the snapshots' trees,
// retention ends; the decision itself is decidePacks, a pure function), and
// a dry run stops there. The execution's order (new packs, new index, old
// index removed, packs removed) means a crash at any point leaves every
// snapshot readable.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneStats, error) {
	maxUnused, err := maxUnusedFunc(opts.MaxUnused)
	if err != nil {
		return nil, err
	}
	say := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	ctx, done, err := r.Hold(ctx, true, "prune")
	if err != nil {
		return nil, err
	}
	defer done()

	p, err := r.planPrune(ctx, maxUnused, say)
	if err != nil {
		return nil, err
	}
	stats := p.stats
	if !opts.DryRun && !p.retained.retentionKnown && len(p.retained.deleteIndex) > 0 && p.deletes() > 0 {
		if refused, why := r.probeDeletes(ctx); refused {
			say("the storage refuses deletions (%v): deferring everything", why)
			r.deferAll(&stats.Deferred, stats, p.retained, p.remove, p.repack, p.unreferenced, p.stored)
			p.remove, p.repack, p.unreferenced = nil, nil, nil
		}
	}
	p.finishStats()
	say("looking for temporary files of interrupted writes")
	if err := r.pruneLeftovers(ctx, leftoverAge(opts.LeftoverAge), time.Now(), opts.DryRun, stats); err != nil {
		return nil, err
	}
	if opts.DryRun {
		stats.Deferred.sort()
		return stats, nil
	}
	if p.deletes() == 0 && len(p.damagedIndex) == 0 {
		// Deferred deletions alone do not rewrite the index: that would
		// only add index files (themselves under retention) and free
		// nothing.
		say("nothing to do")
		stats.Deferred.sort()
		return stats, nil
	}
	if err := r.executePrune(ctx, p, say); err != nil {
		return nil, err
	}
	return stats, nil
}

// prunePlan is what a prune found and decided, before it changes anything.
type prunePlan struct {
	indexFiles   []ID          // every index file, damaged ones too
	inFile       map[ID][]ID   // the packs each intact index file lists
	damagedIndex []SkippedFile // index files that could not be read
	stored       map[ID]int64  // every pack in data/, with its size
	usages       []*packUsage  // every indexed pack
	keep         []*packUsage  // listed again by the new index
	repack       []*packUsage  // rewritten, then removed
	remove       []*packUsage  // removed: nothing in it is used
	unreferenced []ID          // stored packs no index lists: removed
	retained     *deferPlan    // what retention keeps for now
	stats        *PruneStats   // counts so far
	remaining    uint64        // unused bytes left after the plan
}

// deletes is how many packs the plan removes.
func (p *prunePlan) deletes() int { return len(p.remove) + len(p.repack) + len(p.unreferenced) }

// planPrune reads what prune needs and decides what to do; it changes
// nothing in the repository.
func (r *Repository) planPrune(ctx context.Context, maxUnused func(uint64) uint64, say func(string, ...any)) (*prunePlan, error) {
	say("loading indexes")
	indexFiles, indexed, inFile, damagedIndex, err := r.loadIndexFiles(ctx)
	if err != nil {
		return nil, err
	}
	say("searching used packs")
	stored, err := r.listPacks(ctx)
	if err != nil {
		return nil, err
	}
	p := &prunePlan{indexFiles: indexFiles, inFile: inFile, damagedIndex: damagedIndex, stored: stored, stats: &PruneStats{}}
	if len(damagedIndex) > 0 {
		// The packs the damaged files listed look unreferenced: read what
		// they hold from their own headers instead of deleting them.
		if err := r.pruneRecoverIndex(ctx, damagedIndex, stored, indexed, p.stats, say); err != nil {
			return nil, err
		}
	}
	say("finding data that is still in use")
	used, err := r.UsedBlobs(ctx)
	if err != nil {
		var dse *DamagedSnapshotsError
		if errors.As(err, &dse) {
			return nil, err
		}
		return nil, fmt.Errorf("prune: %w", err)
	}
	if p.usages, err = packUsages(indexed, stored, used, p.stats); err != nil {
		return nil, err
	}
	p.keep, p.repack, p.remove, p.remaining = decidePacks(p.usages, maxUnused, p.stats)
	p.unreferenced = make([]ID, 0)
	for id, size := range stored {
		if _, ok := indexed[id]; !ok {
			p.unreferenced = append(p.unreferenced, id)
			p.stats.UnreferencedSize += uint64(size)
		}
	}
	say("asking the storage which files are still under retention")
	p.retained, err = r.prunePlanDeferred(ctx, indexFiles, inFile, p.remove, p.repack, p.keep, p.stats)
	if err != nil {
		return nil, err
	}
	p.remove, p.repack, p.keep = p.retained.remove, p.retained.repack, p.retained.keep
	p.stats.Deferred = *p.retained.deferred
	return p, nil
}

// packUsages sorts every indexed pack's blobs into used (the one copy kept
// of each blob a snapshot needs: the first in pack ID order), duplicate and
// unused, counting them in stats. Every used blob must be in an indexed
// pack and every indexed pack stored, or nothing can be decided.
func packUsages(indexed map[ID][]Blob, stored map[ID]int64, used map[BlobHandle]struct{}, stats *PruneStats) ([]*packUsage, error) {
	packIDs := make([]ID, 0, len(indexed))
	for id := range indexed {
		if _, ok := stored[id]; !ok {
			return nil, fmt.Errorf("prune: index names pack %s, which is missing from the repository; nothing was changed (restore the pack or rebuild the index first)", id.Str())
		}
		packIDs = append(packIDs, id)
	}
	sort.Slice(packIDs, func(i, j int) bool { return string(packIDs[i][:]) < string(packIDs[j][:]) })
	owner := map[BlobHandle]bool{}
	usages := make([]*packUsage, 0, len(packIDs))
	for _, id := range packIDs {
		u := &packUsage{id: id, blobs: indexed[id], owned: make([]bool, len(indexed[id])), storedSize: stored[id]}
		for i, b := range u.blobs {
			if b.Type == TreeBlob {
				u.hasTree = true
			} else {
				u.hasData = true
			}
			size := uint64(b.Length) + uint64(entrySize(b))
			_, isUsed := used[b.BlobHandle]
			switch {
			case isUsed && !owner[b.BlobHandle]:
				owner[b.BlobHandle] = true
				u.owned[i] = true
				u.used += size
				u.usedBlobs++
				stats.UsedBlobs++
				stats.UsedSize += size
			case isUsed:
				u.unused += size
				stats.DuplicateBlobs++
				stats.DuplicateSize += size
			default:
				u.unused += size
				stats.UnusedBlobs++
				stats.UnusedSize += size
			}
		}
		usages = append(usages, u)
	}
	for h := range used {
		if !owner[h] {
			return nil, fmt.Errorf("prune: %v is used by a snapshot but is in no pack of the index; nothing was changed (run check)", h)
		}
	}
	return usages, nil
}

// decidePacks is prune's decision, as restic makes it: a pack with no used
// blob is removed; a pack mixing tree and data blobs is rewritten; a pack
// with no unused space is kept; of the rest, tree packs are rewritten and
// data packs too, those with the highest share of unused space first,
// until what stays unused is within maxUnused(used bytes). It fills the
// size fields of stats from the counts packUsages made, and returns the
// unused bytes that remain.
func decidePacks(usages []*packUsage, maxUnused func(uint64) uint64, stats *PruneStats) (keep, repack, remove []*packUsage, remainingUnused uint64) {
	var candidates []*packUsage
	for _, u := range usages {
		switch {
		case u.usedBlobs == 0:
			remove = append(remove, u)
			stats.RemoveBlobs += len(u.blobs)
			stats.RemoveSize += uint64(u.storedSize)
		case u.hasTree && u.hasData:
			repack = append(repack, u)
		case u.unused == 0:
			keep = append(keep, u)
		default:
			candidates = append(candidates, u)
		}
	}
	// Trees first, then the packs with the highest share of unused space.
	sort.SliceStable(candidates, func(i, j int) bool {
		a, b := candidates[i], candidates[j]
		if a.hasTree != b.hasTree {
			return a.hasTree
		}
		return a.unused*b.used > b.unused*a.used
	})
	stats.MaxUnusedBytesAllowed = maxUnused(stats.UsedSize)
	remainingUnused = stats.UnusedSize + stats.DuplicateSize
	for _, u := range remove {
		remainingUnused -= u.unused
	}
	for _, u := range repack {
		remainingUnused -= u.unused
	}
	for _, u := range candidates {
		if !u.hasTree && remainingUnused < stats.MaxUnusedBytesAllowed {
			keep = append(keep, u)
			continue
		}
		repack = append(repack, u)
		remainingUnused -= u.unused
	}
	for _, u := range repack {
		stats.RepackBlobs += u.usedBlobs
		stats.RepackSize += u.used
		stats.RemoveSize += u.unused
		stats.RemoveBlobs += len(u.blobs) - u.usedBlobs
	}
	return keep, repack, remove, remainingUnused
}

// finishStats fills the pack counts and remaining sizes from the plan as
// it stands (after any deferral).
func (p *prunePlan) finishStats() {
	st := p.stats
	st.PacksTotal = len(p.usages)
	st.PacksKeep, st.PacksRepack, st.PacksRemove, st.PacksUnreferenced = len(p.keep)+p.retained.pinnedKept, len(p.repack), len(p.remove), len(p.unreferenced)
	st.RemainingUnusedSize = p.remaining
	for _, u := range p.keep {
		st.RemainingSize += uint64(u.storedSize)
	}
	st.RemainingSize += st.RepackSize
}

// executePrune carries a plan out: the repacked blobs into new packs, a new
// index of every kept and new pack, the old index files removed, then the
// packs. Deletions the storage refuses are deferred (see removeOrDefer)
// without leaving the index inconsistent.
func (r *Repository) executePrune(ctx context.Context, p *prunePlan, say func(string, ...any)) error {
	stats := p.stats
	newIdx := NewIndex()
	w := r.newWriter(ctx, newIdx)
	for n, u := range p.repack {
		say("repacking pack %d of %d", n+1, len(p.repack))
		if err := r.repackPack(ctx, w, u); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.flushPacks(ctx); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	// The new index lists every kept pack and every new one.
	for _, u := range p.keep {
		newIdx.addStored(u.id, u.blobs)
	}
	say("writing new index")
	if err := r.saveIndex(ctx, newIdx); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	stats.IndexFilesWritten = len(newIdx.Files())
	var mu sync.Mutex
	if err := r.pruneRemoveIndex(ctx, p, &mu, say); err != nil {
		return err
	}
	kept, err := r.pruneRemovePacks(ctx, p, &mu, say)
	if err != nil {
		return err
	}
	if len(kept) > 0 {
		// Index them again, or restic check would call them packs no
		// index references; the next prune finds them unused and
		// retries.
		sort.Slice(kept, func(i, j int) bool { return string(kept[i].id[:]) < string(kept[j].id[:]) })
		for _, u := range kept {
			newIdx.addStored(u.id, u.blobs)
		}
		say("indexing %d packs whose deletion was refused", len(kept))
		if err := r.saveIndex(ctx, newIdx); err != nil {
			return fmt.Errorf("prune: index the %d packs whose deletion was refused: %w", len(kept), err)
		}
		stats.IndexFilesWritten = len(newIdx.Files())
	}
	stats.Deferred.sort()
	if stats.Deferred.Files > 0 {
		say("%s", stats.Deferred.String())
	}
	r.resetIndex(newIdx)
	return nil
}

// pruneRemoveIndex removes the old index files the plan replaces. One the
// storage refuses although no retention said so (a bucket lock rule, no
// delete permission) stays, and so must every pack it lists: they are
// pinned. (The packs it shares with the new index are listed twice then,
// which restic check calls non-critical.)
func (r *Repository) pruneRemoveIndex(ctx context.Context, p *prunePlan, mu *sync.Mutex, say func(string, ...any)) error {
	say("removing %d old index files", len(p.retained.deleteIndex))
	for _, id := range p.retained.deleteIndex {
		gone, err := r.removeOrDefer(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}, 0, mu, &p.stats.Deferred)
		if err != nil {
			return err
		}
		if gone {
			p.stats.IndexFilesReplaced++
			continue
		}
		for _, pack := range p.inFile[id] {
			p.retained.pinned[pack] = true
		}
	}
	return nil
}

// pruneRemovePacks removes the removed, repacked and unreferenced packs
// (pinned ones are deferred), and returns those of the first two whose
// deletion the storage refused: no index file names them now.
func (r *Repository) pruneRemovePacks(ctx context.Context, p *prunePlan, mu *sync.Mutex, say func(string, ...any)) ([]*packUsage, error) {
	def := &p.stats.Deferred
	dead := map[ID]*packUsage{}
	var deadIDs []ID
	for _, u := range append(p.remove, p.repack...) {
		if p.retained.pinned[u.id] {
			def.add(DeferredFile{Object: packObject(u.id), Size: u.storedSize})
			continue
		}
		dead[u.id] = u
		deadIDs = append(deadIDs, u.id)
	}
	deadIDs = append(deadIDs, p.unreferenced...)
	say("removing %d packs", len(deadIDs))
	var kept []*packUsage
	err := forEachParallel(ctx, deadIDs, r.opts.Uploaders*2, func(ctx context.Context, id ID) error {
		gone, err := r.removeOrDefer(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, p.stored[id], mu, def)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
		case gone:
			p.stats.PacksDeleted++
		case dead[id] != nil:
			kept = append(kept, dead[id])
		}
		return err
	})
	return kept, err
}

// pruneRecoverIndex reads the headers of the stored packs that no intact
// index file lists, adds them to indexed and to the loaded index (so trees
// listed only in a damaged file load), or stops when one cannot be read:
// prune cannot tell then what that pack holds.
func (r *Repository) pruneRecoverIndex(ctx context.Context, damaged []SkippedFile, stored map[ID]int64, indexed map[ID][]Blob, stats *PruneStats, say func(string, ...any)) error {
	names := make([]string, len(damaged))
	for i, d := range damaged {
		names[i] = d.Object()
	}
	todo := map[ID]int64{}
	for id, size := range stored {
		if _, ok := indexed[id]; !ok {
			todo[id] = size
		}
	}
	say("damaged index files %s: reading the headers of %d packs no intact index file lists", strings.Join(names, ", "), len(todo))
	found, bad, err := r.readHeaders(ctx, todo)
	if err != nil {
		return fmt.Errorf("prune: %s damaged, reading pack headers instead: %w", strings.Join(names, ", "), err)
	}
	if len(bad) > 0 {
		var msgs []string
		for _, id := range checkSortedIDs(bad) {
			msgs = append(msgs, fmt.Sprintf("%s: %v", checkPackObject(id), bad[id]))
		}
		return fmt.Errorf("prune: %s damaged, and the headers of packs no intact index file lists cannot be read (%s), so prune cannot tell what they hold; nothing was changed (`restic repair packs` salvages what it can)",
			strings.Join(names, ", "), strings.Join(msgs, "; "))
	}
	idx, err := r.Index(ctx)
	if err != nil {
		return err
	}
	for id, blobs := range found {
		indexed[id] = blobs
		idx.add(id, blobs)
	}
	stats.IndexFilesDamaged = len(damaged)
	stats.PacksRecovered = len(found)
	return nil
}

// repackPack loads one pack and saves again the blobs it owns.
func (r *Repository) repackPack(ctx context.Context, w *Writer, u *packUsage) error {
	h := backend.Handle{Type: backend.PackFile, Name: u.id.String()}
	buf, err := loadRange(ctx, r.be, h, u.storedSize, 0)
	if err != nil {
		return err
	}
	for i, b := range u.blobs {
		if !u.owned[i] {
			continue
		}
		end := int64(b.Offset) + int64(b.Length)
		if end > int64(len(buf)) {
			return corrupt(h.String(), "blob %s at %d+%d lies past the end of the %d-byte pack", b.ID.Str(), b.Offset, b.Length, len(buf))
		}
		plain, err := r.openBlob(b, buf[b.Offset:end], nil)
		if err != nil {
			return corrupt(h.String(), "%w; prune stopped before deleting anything", err)
		}
		if _, _, err := w.SaveBlob(ctx, b.Type, plain); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repository) removeFile(ctx context.Context, t backend.FileType, id ID) error {
	h := backend.Handle{Type: t, Name: id.String()}
	if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// resetIndex replaces the cached index after a prune rewrote it.
func (r *Repository) resetIndex(idx *Index) {
	r.idxOnce.Do(func() {})
	r.idx, r.idxErr = idx, nil
}
