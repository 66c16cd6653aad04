package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// testKDF keeps unit tests fast; production keys are calibrated.
var testKDF = &KDFParams{N: 1024, R: 8, P: 1}

func newTestRepo(t *testing.T, version uint, opts Options) (*Repository, *mem.Backend) {
	t.Helper()
	be := mem.New()
	r, err := Init(context.Background(), be, "secret", InitOptions{Version: version, KDF: testKDF}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, be
}

// mixedData returns n bytes: runs of compressible text and random bytes.
func mixedData(seed int64, n int) []byte {
	rng := rand.New(rand.NewSource(seed))
	out := make([]byte, 0, n)
	for len(out) < n {
		if rng.Intn(2) == 0 {
			line := []byte("INSERT INTO t VALUES (12345, 'some text that compresses well');\n")
			for i := 0; i < 2000 && len(out) < n; i++ {
				out = append(out, line...)
			}
		} else {
			b := make([]byte, 1+rng.Intn(1<<20))
			rng.Read(b)
			out = append(out, b...)
		}
	}
	return out[:n]
}

func dumpFile(t *testing.T, r *Repository, sn *Snapshot, p string) []byte {
	t.Helper()
	ctx := context.Background()
	n, err := r.FindNode(ctx, sn, p)
	if err != nil {
		t.Fatal(err)
	}
	fr, err := r.OpenFile(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	got, err := io.ReadAll(fr)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestStreamRoundTrip(t *testing.T) {
	for _, v := range []uint{1, 2} {
		r, be := newTestRepo(t, v, Options{PackSize: MinPackSize})
		ctx := context.Background()
		data := mixedData(1, 12<<20)
		res, err := r.BackupStream(ctx, Stream{Name: "db.dump", Reader: bytes.NewReader(data)}, BackupOptions{Tags: []string{"x"}, Hostname: "h"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sizes["db.dump"] != uint64(len(data)) {
			t.Fatalf("size %d", res.Sizes["db.dump"])
		}
		// Reopen from storage alone.
		r2, err := Open(ctx, be, "secret", Options{})
		if err != nil {
			t.Fatal(err)
		}
		sn, err := r2.FindSnapshot(ctx, res.SnapshotID.String()[:8], SnapshotFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(sn.Paths) != 1 || sn.Paths[0] != "/db.dump" {
			t.Fatalf("paths %v", sn.Paths)
		}
		if got := dumpFile(t, r2, sn, "/db.dump"); !bytes.Equal(got, data) {
			t.Fatalf("v%d: restored %d bytes differ from %d", v, len(got), len(data))
		}
		// Same data again adds no data blobs.
		res2, err := r2.BackupStream(ctx, Stream{Name: "db.dump", Reader: bytes.NewReader(data)}, BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res2.Stats.DataBlobs != 0 {
			t.Fatalf("second backup added %d data blobs", res2.Stats.DataBlobs)
		}
		// No lock left behind.
		if hs := be.Handles(); countType(hs, backend.LockFile) != 0 {
			t.Fatalf("lock left behind")
		}
	}
}

func countType(hs []backend.Handle, t backend.FileType) int {
	n := 0
	for _, h := range hs {
		if h.Type == t {
			n++
		}
	}
	return n
}

func TestEmptyStreamRefused(t *testing.T) {
	r, be := newTestRepo(t, 2, Options{})
	_, err := r.BackupStream(context.Background(), Stream{Name: "x", Reader: bytes.NewReader(nil)}, BackupOptions{})
	if !errors.Is(err, ErrEmptyStream) {
		t.Fatalf("got %v", err)
	}
	if countType(be.Handles(), backend.SnapshotFile) != 0 {
		t.Fatal("snapshot written")
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestFailedStreamWritesNoSnapshot(t *testing.T) {
	r, be := newTestRepo(t, 2, Options{PackSize: MinPackSize})
	boom := errors.New("connection dropped")
	_, err := r.BackupStream(context.Background(), Stream{Name: "x", Reader: &failingReader{data: mixedData(2, 9<<20), err: boom}}, BackupOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if countType(be.Handles(), backend.SnapshotFile) != 0 {
		t.Fatal("snapshot written")
	}
	// A Close error (the dump command's exit status) also aborts.
	exit := errors.New("exit status 1")
	_, err = r.BackupStreams(context.Background(), "c", []Stream{{Name: "a", Reader: bytes.NewReader([]byte("abc")), Close: func() error { return exit }}}, BackupOptions{})
	if !errors.Is(err, exit) {
		t.Fatalf("got %v", err)
	}
	if countType(be.Handles(), backend.SnapshotFile) != 0 {
		t.Fatal("snapshot written")
	}
}

func TestMultiStream(t *testing.T) {
	r, _ := newTestRepo(t, 2, Options{})
	ctx := context.Background()
	a, b := mixedData(3, 3<<20), []byte("globals\n")
	// Progress: TotalBytesRead runs over both streams, BytesRead over one.
	var mu sync.Mutex
	maxTotal, maxFile := uint64(0), map[string]uint64{}
	progress := func(p BackupProgress) {
		mu.Lock()
		defer mu.Unlock()
		maxTotal = max(maxTotal, p.TotalBytesRead)
		maxFile[p.File] = max(maxFile[p.File], p.BytesRead)
		if p.TotalBytesRead < p.BytesRead {
			t.Errorf("progress %+v: total below the file's", p)
		}
	}
	res, err := r.BackupStreams(ctx, "scalr-app-db", []Stream{
		{Name: "app.pgdump", Reader: bytes.NewReader(a)},
		{Name: "globals.sql", Reader: bytes.NewReader(b)},
	}, BackupOptions{Time: time.Unix(1700000000, 0), Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(a) + len(b)); maxTotal != want || maxFile["scalr-app-db/app.pgdump"] != uint64(len(a)) || maxFile["scalr-app-db/globals.sql"] != uint64(len(b)) {
		t.Errorf("progress: total %d, per file %v; want total %d", maxTotal, maxFile, want)
	}
	sn := res.Snapshot
	if len(sn.Paths) != 1 || sn.Paths[0] != "/scalr-app-db" {
		t.Fatalf("paths %v", sn.Paths)
	}
	if got := dumpFile(t, r, sn, "/scalr-app-db/app.pgdump"); !bytes.Equal(got, a) {
		t.Fatal("app.pgdump differs")
	}
	if got := dumpFile(t, r, sn, "/scalr-app-db/globals.sql"); !bytes.Equal(got, b) {
		t.Fatal("globals differs")
	}
	if _, err := r.FindNode(ctx, sn, "/scalr-app-db/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v", err)
	}
}

func TestWrongPassword(t *testing.T) {
	_, be := newTestRepo(t, 2, Options{})
	_, err := Open(context.Background(), be, "nope", Options{})
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("got %v", err)
	}
}
