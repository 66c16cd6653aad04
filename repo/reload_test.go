package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// A reader opened before another writer added a snapshot finds that
// snapshot's trees and data by reloading the index, once, and reports a
// blob that is truly gone as ErrBlobMissing, never as a path not found.
func TestReaderReloadsIndex(t *testing.T) {
	ctx := context.Background()
	w, be := newTestRepo(t, 2, Options{})
	if _, err := w.BackupStream(ctx, Stream{Name: "old.dump", Reader: bytes.NewReader(mixedData(1, 1<<20))}, BackupOptions{Hostname: "a"}); err != nil {
		t.Fatal(err)
	}

	// The reader: opened and its index loaded now.
	rd, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	idx, err := rd.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := len(idx.Files())

	// Another writer (another host) adds a snapshot.
	other, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	data := mixedData(2, 3<<20)
	res, err := other.BackupStreams(ctx, "app", []Stream{
		{Name: "manifest.json", Reader: strings.NewReader(`{"format":1}`)},
		{Name: "app.pgdump", Reader: bytes.NewReader(data)},
	}, BackupOptions{Hostname: "b", Tags: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}

	// The reader lists snapshots afresh (as FindSnapshot does) and reads the
	// new one's files: its index lacked every blob of them.
	sn, err := rd.FindSnapshot(ctx, res.SnapshotID.String(), SnapshotFilter{})
	if err != nil {
		t.Fatal(err)
	}
	lists := 0
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpList && h.Type == backend.IndexFile {
			lists++
		}
		return nil
	})
	if got := dumpFile(t, rd, sn, "/app/manifest.json"); string(got) != `{"format":1}` {
		t.Fatalf("manifest %q", got)
	}
	if got := dumpFile(t, rd, sn, "/app/app.pgdump"); !bytes.Equal(got, data) {
		t.Fatal("the new snapshot's dump differs")
	}
	if lists != 1 {
		t.Errorf("index listed %d times to read the new snapshot, want 1 (one reload)", lists)
	}
	if after := len(idx.Files()); after <= before {
		t.Errorf("index files %d after the reload, %d before", after, before)
	}
	// A path that does not exist is still ErrNotFound.
	if _, err := rd.FindNode(ctx, sn, "/app/nope"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrBlobMissing) {
		t.Errorf("missing path: %v", err)
	}

	// A blob in no index file: one reload, then ErrBlobMissing (not
	// ErrNotFound), for a tree and for file data alike.
	lists = 0
	var gone ID
	gone[0] = 0xee
	if _, err := rd.LoadTree(ctx, gone); !errors.Is(err, ErrBlobMissing) || errors.Is(err, ErrNotFound) {
		t.Errorf("missing tree: %v", err)
	}
	fr, err := rd.OpenFile(ctx, &Node{Name: "x", Type: NodeFile, Content: []ID{gone}, Size: 1})
	if err == nil {
		fr.Close()
	}
	if !errors.Is(err, ErrBlobMissing) || !strings.Contains(err.Error(), "part 0") {
		t.Errorf("missing data blob: %v", err)
	}
	if lists != 2 {
		t.Errorf("%d index listings for two misses, want 2", lists)
	}
}

// Concurrent misses share one reload.
func TestReloadIndexShared(t *testing.T) {
	ctx := context.Background()
	w, be := newTestRepo(t, 2, Options{})
	rd, err := Open(ctx, be, "secret", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if _, err := rd.Index(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := w.BackupStream(ctx, Stream{Name: "x", Reader: bytes.NewReader(mixedData(3, 1<<20))}, BackupOptions{Hostname: "a"})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := rd.LoadSnapshot(ctx, res.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	lists := 0
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpList && h.Type == backend.IndexFile {
			mu.Lock()
			lists++
			mu.Unlock()
		}
		return nil
	})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := rd.FindNode(ctx, sn, "/x")
			if err != nil {
				t.Error(err)
				return
			}
			fr, err := rd.OpenFile(ctx, n)
			if err != nil {
				t.Error(err)
				return
			}
			defer fr.Close()
			_, _ = io.Copy(io.Discard, fr)
		}()
	}
	wg.Wait()
	if lists < 1 || lists > 2 {
		t.Errorf("%d index listings for 8 concurrent readers, want 1 (2 at most, by timing)", lists)
	}
}
