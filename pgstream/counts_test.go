package pgstream

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The row counts run in the dump's snapshot while pg_dump streams, not
// before it starts: they scan every table once more, and in front of the
// dump that scan added to the whole backup's time. The manifest still
// carries them, and the session commits only after both are done.
func TestRowCountsRunWhileDumping(t *testing.T) {
	f, pg, tg := setupBackup(t)
	var mu sync.Mutex
	started := make(chan struct{}, 4) // one per pg_dump run
	pg.dumpHook = func(*execCall) (int, bool) {
		started <- struct{}{}
		return 0, false
	}
	var countedDuring, countedBefore int
	pg.countHook = func() {
		// Give pg_dump the time to start, as the counts take that long.
		select {
		case <-started:
			mu.Lock()
			countedDuring++
			mu.Unlock()
		case <-time.After(5 * time.Second):
			mu.Lock()
			countedBefore++
			mu.Unlock()
		}
	}
	res, err := BackupContainer(context.Background(), f, memRepo(t), tg, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if countedDuring != 2 || countedBefore != 0 {
		t.Fatalf("row counts: %d ran while pg_dump was running, %d before it started; want 2 and 0", countedDuring, countedBefore)
	}
	for _, d := range res.Manifest.Databases {
		if d.Tables == nil {
			t.Fatalf("database %s: no row counts in the manifest", d.Name)
		}
	}
	if n := len(res.Manifest.Databases[0].Tables); n != 2 {
		t.Fatalf("database app: %d tables counted, want 2", n)
	}
}
