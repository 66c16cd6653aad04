package repo

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

// openSpoolFiles lists this process's open files that are unlinked spool
// files in dir.
func openSpoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(dir, "scalr-backup-pack-")) {
			out = append(out, target)
		}
	}
	return out
}

// spoolTmp points TMPDIR at a fresh folder and fails the test if anything
// is left in it.
func spoolTmp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	t.Cleanup(func() {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Errorf("TMPDIR holds %d entries (%v)", len(ents), err)
		}
	})
	return dir
}

// Packs are spooled to unnamed files in TMPDIR: while a pack is open its
// file is open but has no name, and Flush and Abort close every one.
func TestSpoolFilesUnlinkedAndClosed(t *testing.T) {
	dir := spoolTmp(t)
	r, be := newTestRepo(t, 2, Options{PackSize: MinPackSize})
	ctx := context.Background()
	data := mixedData(3, 3*MinPackSize)
	for round, abort := range []bool{false, true} {
		w, err := r.NewWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+64<<10 <= len(data); i += 64 << 10 {
			chunk := append([]byte{byte(round)}, data[i:i+64<<10]...)
			if _, _, err := w.SaveBlob(ctx, DataBlob, chunk); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(openSpoolFiles(t, dir)); n == 0 {
			t.Fatal("no spool file open while a pack is being filled")
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("spool files have names: %v", ents)
		}
		if abort {
			w.Abort()
		} else if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if open := openSpoolFiles(t, dir); len(open) != 0 {
			t.Fatalf("abort=%v: %d spool files still open: %v", abort, len(open), open)
		}
	}
	// Every stored pack is named by its content's hash.
	for _, h := range be.Handles() {
		if h.Type == backend.PackFile {
			b, _ := be.Get(h)
			if got := ID(sha256.Sum256(b)); got.String() != h.Name {
				t.Fatalf("pack %s holds bytes hashing to %s", h.Name, got)
			}
		}
	}
}

// A failed upload and a cancelled backup close their spool files too.
func TestSpoolFilesClosedOnFailure(t *testing.T) {
	dir := spoolTmp(t)
	r, be := newTestRepo(t, 2, Options{PackSize: MinPackSize})
	ctx := context.Background()
	boom := errors.New("storage refuses")
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpSave && h.Type == backend.PackFile {
			return backend.Permanent(boom)
		}
		return nil
	})
	_, err := r.BackupStream(ctx, Stream{Name: "a", Reader: bytes.NewReader(mixedData(4, 3*MinPackSize))}, BackupOptions{Hostname: "h"})
	if !errors.Is(err, boom) {
		t.Fatalf("backup error %v, want %v", err, boom)
	}
	if open := openSpoolFiles(t, dir); len(open) != 0 {
		t.Fatalf("%d spool files still open after a failed upload", len(open))
	}

	// Cancelled while a pack waits for an uploader.
	be.SetHook(func(op mem.Op, h backend.Handle) error {
		if op == mem.OpSave && h.Type == backend.PackFile {
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	cctx, cancel := context.WithCancel(ctx)
	rd := &cancelAfter{r: bytes.NewReader(mixedData(5, 6*MinPackSize)), n: 4 * MinPackSize, cancel: cancel}
	if _, err := r.BackupStream(cctx, Stream{Name: "b", Reader: rd}, BackupOptions{Hostname: "h"}); err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	if open := openSpoolFiles(t, dir); len(open) != 0 {
		t.Fatalf("%d spool files still open after a cancelled backup", len(open))
	}
}

// cancelAfter cancels its context once n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// A spooled pack's source gives the same bytes after Rewind, with their
// MD5; an upload cut off half way and retried stores the whole pack.
func TestSpoolSourceRewind(t *testing.T) {
	dir := spoolTmp(t)
	f, err := newSpoolFile()
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t)
	p := newSpooledPackBuilder(f)
	for _, blob := range [][]byte{mixedData(6, 100<<10), mixedData(7, 300<<10)} {
		sealed, err := key.Seal(nil, blob)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.add(BlobHandle{ID: Hash(blob), Type: DataBlob}, sealed, 0); err != nil {
			t.Fatal(err)
		}
	}
	fp, err := p.finish(key)
	if err != nil {
		t.Fatal(err)
	}
	src := fp.source()
	pack, err := io.ReadAll(src)
	if err != nil || int64(len(pack)) != fp.size || src.Length() != fp.size || fp.id != ID(sha256.Sum256(pack)) {
		t.Fatalf("spooled pack %s: read %d of %d bytes (%v), or its hash is not its name", fp.id.Str(), len(pack), fp.size, err)
	}
	if blobs, err := decodePackTail(key, pack); err != nil || len(blobs) != 2 {
		t.Fatalf("spooled pack header: %d blobs, %v", len(blobs), err)
	}
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	half := make([]byte, fp.size/2)
	if _, err := io.ReadFull(src, half); err != nil {
		t.Fatal(err)
	}
	if err := src.Rewind(); err != nil {
		t.Fatal(err)
	}
	if again, err := io.ReadAll(src); err != nil || !bytes.Equal(again, pack) {
		t.Fatalf("after Rewind: %d bytes, %v; want the pack's %d bytes", len(again), err, len(pack))
	}
	if sum := md5.Sum(pack); !bytes.Equal(src.MD5(), sum[:]) {
		t.Fatal("MD5 of the spooled source is wrong")
	}
	if sum := sha256.Sum256(pack); !bytes.Equal(src.SHA256(), sum[:]) {
		t.Fatal("SHA-256 of the spooled source is wrong")
	}

	// Through the retry decorator: the first attempt reads half and fails.
	mb := mem.New()
	be := backend.NewRetry(&flakySave{Backend: mb}, backend.RetryOptions{InitialDelay: time.Millisecond})
	h := backend.Handle{Type: backend.PackFile, Name: fp.id.String()}
	if err := be.Save(context.Background(), h, fp.source()); err != nil {
		t.Fatal(err)
	}
	if stored, _ := mb.Get(h); !bytes.Equal(stored, pack) {
		t.Fatalf("retried upload stored %d bytes, not the pack", len(stored))
	}
	fp.close()
	if open := openSpoolFiles(t, dir); len(open) != 0 {
		t.Fatalf("%d spool files open after close", len(open))
	}
}

// flakySave fails its first Save after reading half of the source.
type flakySave struct {
	backend.Backend
	failed bool
}

func (f *flakySave) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if !f.failed {
		f.failed = true
		_, _ = io.CopyN(io.Discard, src, src.Length()/2)
		return errors.New("connection reset")
	}
	return f.Backend.Save(ctx, h, src)
}

// Without a usable TMPDIR packs are built in memory and the backup works.
func TestSpoolFallbackToMemory(t *testing.T) {
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	r, be := newTestRepo(t, 2, Options{PackSize: MinPackSize})
	data := mixedData(8, 2*MinPackSize)
	res, err := r.BackupStream(context.Background(), Stream{Name: "c", Reader: bytes.NewReader(data)}, BackupOptions{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := chkReadFile(r, res.Snapshot, "/c")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if countType(be.Handles(), backend.PackFile) == 0 {
		t.Fatal("no packs stored")
	}
}
