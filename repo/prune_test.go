package repo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
)

func TestPruneKeepsWhatSnapshotsNeed(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{PackSize: MinPackSize})
	var ids []ID
	var datas [][]byte
	for i := 0; i < 4; i++ {
		// Each stream shares its first half with the previous one.
		d := append(mixedData(int64(10+i), 6<<20), mixedData(int64(11+i), 6<<20)...)
		res, err := r.BackupStream(ctx, Stream{Name: "db", Reader: bytes.NewReader(d)}, BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.SnapshotID)
		datas = append(datas, d)
	}
	before := storedBytes(be, backend.PackFile)
	// Forget the first two snapshots by removing their files.
	for _, id := range ids[:2] {
		if err := be.Remove(ctx, backend.Handle{Type: backend.SnapshotFile, Name: id.String()}); err != nil {
			t.Fatal(err)
		}
	}
	dry, err := r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.RemoveSize == 0 || storedBytes(be, backend.PackFile) != before {
		t.Fatalf("dry run: %+v, stored changed", dry)
	}
	st, err := r.Prune(ctx, PruneOptions{MaxUnused: "0%"})
	if err != nil {
		t.Fatal(err)
	}
	after := storedBytes(be, backend.PackFile)
	if after >= before {
		t.Fatalf("prune freed nothing: %d -> %d (%+v)", before, after, st)
	}
	// A fresh open sees only the new index and every kept snapshot reads.
	r2, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids[2:] {
		sn, err := r2.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := dumpFile(t, r2, sn, "/db"); !bytes.Equal(got, datas[i+2]) {
			t.Fatalf("snapshot %d differs after prune", i+2)
		}
	}
	// With 0% tolerated, nothing unused remains: a second prune has nothing to do.
	st2, err := r2.Prune(ctx, PruneOptions{DryRun: true, MaxUnused: "0%"})
	if err != nil {
		t.Fatal(err)
	}
	if st2.UnusedBlobs != 0 || st2.PacksRemove != 0 || st2.PacksRepack != 0 {
		t.Fatalf("second prune would still act: %+v", st2)
	}
	if countType(be.Handles(), backend.LockFile) != 0 {
		t.Fatal("lock left behind")
	}
}

func TestPruneRefusesWhileLocked(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, 2, Options{})
	l, err := r.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	_, err = r.Prune(ctx, PruneOptions{})
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("prune under a backup's lock: %v", err)
	}
}

func storedBytes(be interface {
	Handles() []backend.Handle
	Get(backend.Handle) ([]byte, bool)
}, t backend.FileType) int {
	n := 0
	for _, h := range be.Handles() {
		if h.Type == t {
			b, _ := be.Get(h)
			n += len(b)
		}
	}
	return n
}
