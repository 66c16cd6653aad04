package repo

import (
	"context"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

func TestExtendRetention(t *testing.T) {
	ctx := context.Background()
	r, lk, m := deferTestRepo(t) // retention 1 h
	idA := deferBackup(t, r, 1)
	idB := deferBackup(t, r, 2)
	start := time.Now()

	// Right after writing, nothing is within half the period of its end.
	st, err := r.ExtendRetention(ctx, ExtendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st == nil || st.Extended != 0 || st.Objects == 0 || lk.Extends != 0 {
		t.Fatalf("extension right after the backups: %+v (%d requests)", st, lk.Extends)
	}
	all := st.Objects

	// 40 minutes on, every needed object ends within 30 minutes: each is
	// extended once, to now plus an hour; A's own objects are not.
	later := start.Add(40 * time.Minute)
	st, err = r.ExtendRetention(ctx, ExtendOptions{Now: later, Exclude: map[ID]bool{idA: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Extended != st.Objects || lk.Extends != st.Objects || st.Objects >= all {
		t.Fatalf("extension 40 min on without A: %+v, %d requests, %d objects with A", st, lk.Extends, all)
	}
	snapA := backend.Handle{Type: backend.SnapshotFile, Name: idA.String()}
	snapB := backend.Handle{Type: backend.SnapshotFile, Name: idB.String()}
	if got := lk.Until(snapB); !got.Equal(st.Until) || !st.Until.Equal(later.Add(time.Hour).UTC()) {
		t.Errorf("B's snapshot: until %v, want %v", got, st.Until)
	}
	if got := lk.Until(snapA); !got.Before(start.Add(time.Hour + time.Minute)) {
		t.Errorf("A's snapshot (excluded) extended to %v", got)
	}
	if got := lk.Until(backend.Handle{Type: backend.ConfigFile}); !got.Equal(st.Until) {
		t.Errorf("config: until %v, want %v", got, st.Until)
	}
	// One more pass a minute later: nothing is due, no request but HEADs.
	requests := lk.Extends
	st, err = r.ExtendRetention(ctx, ExtendOptions{Now: later.Add(time.Minute), Exclude: map[ID]bool{idA: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Extended != 0 || lk.Extends != requests {
		t.Fatalf("second extension: %+v, %d more requests", st, lk.Extends-requests)
	}
	// Every pack and index file B needs is among the extended.
	n := 0
	for _, h := range m.Handles() {
		if h.Type == backend.PackFile || h.Type == backend.IndexFile {
			if lk.Until(h).After(start.Add(time.Hour + time.Minute)) {
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no pack or index file extended")
	}
}

func TestCoveringIndexFiles(t *testing.T) {
	id := func(b byte) ID { var x ID; x[0] = b; return x }
	// A prune's index (3) lists the kept packs 10 and 11; an older file (1)
	// lists them too and a deleted pack 12; a backup's file (2) lists 13.
	inFile := map[ID][]ID{
		id(1): {id(10), id(11), id(12)},
		id(2): {id(13)},
		id(3): {id(10), id(11)},
	}
	got := coveringIndexFiles(inFile, map[ID]bool{id(10): true, id(11): true, id(13): true})
	if len(got) != 2 || got[0] != id(2) || got[1] != id(3) {
		t.Fatalf("covering files: %v, want files 2 and 3", got)
	}
	if got := coveringIndexFiles(inFile, map[ID]bool{id(99): true}); len(got) != 0 {
		t.Fatalf("a pack no file lists: %v", got)
	}
}
