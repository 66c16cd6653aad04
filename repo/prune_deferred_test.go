package repo

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// deferTestRepo is a repository on a backend with per-file retention.
func deferTestRepo(t *testing.T) (*Repository, *backendtest.Locking, *mem.Backend) {
	t.Helper()
	m := mem.New()
	lk := backendtest.NewLocking(m, time.Hour)
	r, err := Init(context.Background(), lk, "secret", InitOptions{Version: 2, KDF: testKDF}, Options{PackSize: MinPackSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, lk, m
}

func deferBackup(t *testing.T, r *Repository, seed int64) ID {
	t.Helper()
	res, err := r.BackupStream(context.Background(), Stream{Name: "db", Reader: bytes.NewReader(mixedData(seed, 3<<20))}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.SnapshotID
}

// checkClean runs our check and fails on any error or hint: an index that
// names a missing pack, a pack no index names, a pack in two index files.
func checkClean(t *testing.T, r *Repository, when string) {
	t.Helper()
	rep, err := r.Check(context.Background(), CheckOptions{})
	if err != nil {
		t.Fatalf("%s: check: %v", when, err)
	}
	if len(rep.Errors)+len(rep.Hints) > 0 {
		t.Fatalf("%s: check: errors %+v, hints %+v", when, rep.Errors, rep.Hints)
	}
}

func keepLast1(t *testing.T, r *Repository) *ForgetResult {
	t.Helper()
	res, err := r.ForgetWithOptions(context.Background(), ForgetOptions{GroupBy: DefaultGroupBy, Policy: ExpirePolicy{Last: 1}})
	if err != nil {
		t.Fatalf("forget: %v", err)
	}
	return res
}

func TestForgetPruneDeferLockedDeletions(t *testing.T) {
	ctx := context.Background()
	r, lk, _ := deferTestRepo(t)
	idA := deferBackup(t, r, 1)
	deferBackup(t, r, 2)

	// A locked snapshot file: forget defers it, with its end.
	res := keepLast1(t, r)
	if len(res.Removed) != 0 || res.Deferred.Files != 1 || res.Deferred.List[0].Object != "snapshots/"+idA.String() ||
		res.Deferred.Until.IsZero() {
		t.Fatalf("forget of a locked snapshot: removed %v, deferred %+v", res.Removed, res.Deferred)
	}
	lk.Unlock()
	if res := keepLast1(t, r); len(res.Removed) != 1 || res.Deferred.Files != 0 {
		t.Fatalf("forget once unlocked: removed %v, deferred %+v", res.Removed, res.Deferred)
	}
	// The packs are unlocked too: prune removes them, and locks the new
	// index file it writes.
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRemove == 0 || st.Deferred.Files != 0 || st.IndexFilesWritten == 0 {
		t.Fatalf("prune once unlocked: %+v", st)
	}
	checkClean(t, r, "after the first prune")

	// B's packs are now listed by that locked index file: once B is
	// forgotten, prune must keep them (and that file) and write nothing.
	lkIndexes := countType(lk.Backend.(*mem.Backend).Handles(), backend.IndexFile)
	deferBackup(t, r, 3)
	for _, h := range lk.Backend.(*mem.Backend).Handles() {
		if h.Type == backend.SnapshotFile {
			if until := lk.Until(h); !until.IsZero() && time.Until(until) < 59*time.Minute {
				t.Fatalf("%v: lock ends %v, want an hour from its write", h, until)
			}
		}
	}
	snaps, _, err := r.LoadSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	SortNewestFirst(snaps)
	if _, err := r.RemoveSnapshotsDeferring(ctx, []ID{snaps[0].ID}, nil); !errors.Is(err, backend.ErrDeleteRefused) {
		t.Fatalf("removing a locked snapshot without deferring: %v, want ErrDeleteRefused", err)
	}
	if res := keepLast1(t, r); len(res.Removed) != 1 || res.Removed[0] != snaps[1].ID {
		t.Fatalf("forget of B (unlocked): removed %v", res.Removed)
	}
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var packs int
	for _, f := range st.Deferred.List {
		if strings.HasPrefix(f.Object, "data/") {
			packs++
		}
		if f.Until.IsZero() {
			t.Errorf("deferred %s without an end", f.Object)
		}
	}
	if packs == 0 || st.IndexFilesWritten != 0 || st.PacksRemove != 0 {
		t.Fatalf("prune with B's packs pinned by a locked index file: %+v", st)
	}
	if n := countType(lk.Backend.(*mem.Backend).Handles(), backend.IndexFile); n != lkIndexes+1 {
		t.Fatalf("index files: %d, want %d (the backup's one added, nothing rewritten)", n, lkIndexes+1)
	}
	checkClean(t, r, "after a prune that deferred pinned packs")

	lk.Unlock()
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deferred.Files != 0 || st.PacksRemove < packs {
		t.Fatalf("prune once unlocked: %+v", st)
	}
	checkClean(t, r, "after the retry")
}

func TestPruneDefersWhenDeletesAreRefused(t *testing.T) {
	ctx := context.Background()
	r, lk, m := deferTestRepo(t)
	lk.Retention = 0 // no Object Lock: refusals come from policy or lock rules
	lk.NoRetentionInfo = true
	deferBackup(t, r, 1)
	deferBackup(t, r, 2)
	lk.RefuseAll = true
	res := keepLast1(t, r)
	if res.Deferred.Files != 1 || res.Deferred.UnknownUntil != 1 || !res.Deferred.Until.IsZero() {
		t.Fatalf("forget with deletes refused: %+v", res.Deferred)
	}
	// Another key forgets it (it may delete); this one prunes.
	if err := m.Remove(ctx, backend.Handle{Type: backend.SnapshotFile, Name: res.Remove[0].String()}); err != nil {
		t.Fatal(err)
	}
	before := len(m.Handles())
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deferred.Files == 0 || st.Deferred.UnknownUntil != st.Deferred.Files || st.IndexFilesWritten != 0 {
		t.Fatalf("prune with deletes refused: %+v", st)
	}
	if after := len(m.Handles()); after != before+1 {
		t.Fatalf("prune with deletes refused changed the repository: %d files, then %d (want only the delete probe added)", before, after)
	}
	// The next refused prune re-uses the probe instead of adding one.
	if _, err := r.Prune(ctx, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := len(m.Handles()); after != before+1 {
		t.Fatalf("a second refused prune: %d files, want %d", after, before+1)
	}
	checkClean(t, r, "after a prune whose deletes were refused")
	lk.RefuseAll = false
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deferred.Files != 0 || st.PacksRemove == 0 {
		t.Fatalf("prune once deletes work: %+v", st)
	}
	checkClean(t, r, "after the retry")
}

// repair index under retention: the old index files stay (deferred, with
// their end), the command does not fail.
func TestRepairIndexDefersLockedIndexFiles(t *testing.T) {
	ctx := context.Background()
	r, _, _ := deferTestRepo(t)
	deferBackup(t, r, 1)
	rep, err := r.RepairIndex(ctx, RepairIndexOptions{ReadAllPacks: true})
	if err != nil {
		t.Fatalf("repair index under retention: %v", err)
	}
	if rep.Deferred.Files == 0 || rep.Deferred.Until.IsZero() || len(rep.IndexRemoved) != 0 {
		t.Fatalf("repair index under retention: removed %v, deferred %+v", rep.IndexRemoved, rep.Deferred)
	}
}
