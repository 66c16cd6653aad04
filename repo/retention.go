package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// ExtendOptions tune ExtendRetention.
type ExtendOptions struct {
	// Period is the retention every needed object must keep ahead of
	// now; zero takes the backend's (s3.retention), and with none there
	// is nothing to do.
	Period time.Duration
	// Exclude are snapshots that are not kept (forget just removed them,
	// or deferred their removal): what only they need is left to expire.
	Exclude map[ID]bool
	// Now is the current time (zero: time.Now()).
	Now time.Time
}

// ExtendStats say what ExtendRetention did.
type ExtendStats struct {
	// PeriodSeconds is the retention kept ahead.
	PeriodSeconds float64 `json:"period_seconds"`
	// Objects counts the objects the kept snapshots need (config, keys,
	// kept snapshot files, the packs holding their blobs, and the fewest
	// index files that list those packs); each costs one HEAD.
	Objects int `json:"objects"`
	// IndexFiles counts the index files among them.
	IndexFiles int `json:"index_files"`
	// Extended counts those whose retention ended within half the period
	// and was moved to now plus the period (one PutObjectRetention each).
	Extended int `json:"extended"`
	// Until is the end given to the extended ones; EarliestEnd the
	// earliest retention end among all needed objects afterwards.
	Until       time.Time `json:"until,omitzero"`
	EarliestEnd time.Time `json:"earliest_end,omitzero"`
}

// ExtendRetention keeps every object that the kept snapshots need under
// retention: an object whose retention ends within half the period is
// extended to now plus the period, so each object costs one extension
// request per half period (not one per pass) and is always locked for at
// least half the period ahead, given a pass at least that often. Objects
// only excluded snapshots need are not extended and expire, so that a
// later prune can delete them. On storage without per-object retention
// (a local folder, a bucket without Object Lock) it does nothing and
// returns nil stats.
func (r *Repository) ExtendRetention(ctx context.Context, o ExtendOptions) (*ExtendStats, error) {
	period := o.Period
	if period <= 0 {
		period = backend.RetentionPeriod(r.be)
	}
	if period <= 0 {
		return nil, nil
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	handles, err := r.neededObjects(ctx, o.Exclude)
	if err != nil {
		return nil, fmt.Errorf("extend retention: %w", err)
	}
	st := &ExtendStats{PeriodSeconds: period.Seconds(), Objects: len(handles), Until: now.Add(period).UTC()}
	for _, h := range handles {
		if h.Type == backend.IndexFile {
			st.IndexFiles++
		}
	}
	var (
		mu          sync.Mutex
		unsupported bool
	)
	err = forEachParallel(ctx, handles, 8, func(ctx context.Context, h backend.Handle) error {
		until, err := backend.RetainUntil(ctx, r.be, h)
		if errors.Is(err, errors.ErrUnsupported) {
			mu.Lock()
			unsupported = true
			mu.Unlock()
			return err
		}
		if err != nil {
			return fmt.Errorf("extend retention: %w", err)
		}
		if !until.Before(now.Add(period / 2)) {
			mu.Lock()
			if st.EarliestEnd.IsZero() || until.Before(st.EarliestEnd) {
				st.EarliestEnd = until
			}
			mu.Unlock()
			return nil
		}
		if err := backend.ExtendRetention(ctx, r.be, h, st.Until); err != nil {
			return fmt.Errorf("extend retention of %v: %w", h, err)
		}
		mu.Lock()
		st.Extended++
		if st.EarliestEnd.IsZero() || st.Until.Before(st.EarliestEnd) {
			st.EarliestEnd = st.Until
		}
		mu.Unlock()
		return nil
	})
	if unsupported {
		return nil, nil
	}
	if err != nil {
		return st, err
	}
	return st, nil
}

// neededObjects lists what the snapshots not in exclude need, sorted:
// config, every key, their snapshot files, the packs holding their blobs
// and a smallest covering set of index files for those packs.
func (r *Repository) neededObjects(ctx context.Context, exclude map[ID]bool) ([]backend.Handle, error) {
	out := []backend.Handle{{Type: backend.ConfigFile}}
	if err := r.be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		out = append(out, backend.Handle{Type: backend.KeyFile, Name: fi.Name})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	snaps, skipped, err := r.LoadSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var kept []*Snapshot
	for _, sn := range snaps {
		if !exclude[sn.ID] {
			kept = append(kept, sn)
			out = append(out, backend.Handle{Type: backend.SnapshotFile, Name: sn.ID.String()})
		}
	}
	for _, s := range skipped {
		// A damaged snapshot file is kept as it is: it is evidence, and
		// check names it; what it needs is unknown.
		out = append(out, s.Handle)
	}
	used, err := r.usedBlobsOf(ctx, kept)
	if err != nil {
		return nil, err
	}
	idx, err := r.Index(ctx)
	if err != nil {
		return nil, err
	}
	packs := map[ID]bool{}
	for h := range used {
		if pb, ok := idx.Lookup(h); ok {
			packs[pb.PackID] = true
		}
	}
	for _, id := range checkSortedIDs(packs) {
		out = append(out, backend.Handle{Type: backend.PackFile, Name: id.String()})
	}
	_, _, inFile, _, err := r.loadIndexFiles(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range coveringIndexFiles(inFile, packs) {
		out = append(out, backend.Handle{Type: backend.IndexFile, Name: id.String()})
	}
	return out, nil
}

// coveringIndexFiles picks, greedily, few index files that together list
// every pack in need: the file listing most packs not yet covered first,
// on a tie the one listing fewer packs in all (a prune's fresh index over
// an older file that also lists packs since deleted), then by ID. Older
// index files that only repeat what is covered are not extended, expire,
// and a prune can delete them.
func coveringIndexFiles(inFile map[ID][]ID, need map[ID]bool) []ID {
	files := checkSortedIDs(inFile)
	left := make(map[ID]bool, len(need))
	for id := range need {
		left[id] = true
	}
	var chosen []ID
	for len(left) > 0 {
		best, bestN := -1, 0
		for i, f := range files {
			n := 0
			for _, p := range inFile[f] {
				if left[p] {
					n++
				}
			}
			if n > bestN || n == bestN && n > 0 && len(inFile[f]) < len(inFile[files[best]]) {
				best, bestN = i, n
			}
		}
		if best < 0 {
			break // packs no index file lists: nothing to extend for them
		}
		chosen = append(chosen, files[best])
		for _, p := range inFile[files[best]] {
			delete(left, p)
		}
	}
	sort.Slice(chosen, func(i, j int) bool { return string(chosen[i][:]) < string(chosen[j][:]) })
	return chosen
}
