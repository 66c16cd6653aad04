package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
)

func newRepo(t *testing.T) *Backend {
	t.Helper()
	be := New(filepath.Join(t.TempDir(), "repo"))
	if err := be.Create(context.Background()); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return be
}

func TestContract(t *testing.T) {
	backendtest.RunContract(t, func(t *testing.T) backend.Backend { return newRepo(t) })
}

// TestContractRenameFallback runs the contract with hard links unavailable,
// so Save uses its check-then-rename path.
func TestContractRenameFallback(t *testing.T) {
	noLinks(t)
	backendtest.RunContract(t, func(t *testing.T) backend.Backend { return newRepo(t) })
}

func noLinks(t *testing.T) {
	old := linkFile
	linkFile = func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EPERM}
	}
	t.Cleanup(func() { linkFile = old })
}

var ctx = context.Background()

func hexID(prefix string) string {
	return prefix + strings.Repeat("0", 64-len(prefix))
}

func TestCreateLayout(t *testing.T) {
	be := newRepo(t)
	want := []string{"", "keys", "snapshots", "index", "locks", "data"}
	for i := 0; i < 256; i++ {
		want = append(want, fmt.Sprintf("data/%02x", i))
	}
	for _, d := range want {
		fi, err := os.Stat(filepath.Join(be.Path(), d))
		if err != nil {
			t.Fatalf("after Create: %v", err)
		}
		if !fi.IsDir() {
			t.Fatalf("%s is not a folder", d)
		}
		if perm := fi.Mode().Perm(); perm&0o700 != 0o700 || perm&0o077 != 0 {
			t.Errorf("%s has mode %o, want 0700", d, perm)
		}
	}
	// Nothing else: no config yet, no stray files.
	var got []string
	err := filepath.WalkDir(be.Path(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(be.Path(), p)
		if rel == "." {
			rel = ""
		}
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Create made %v, want %v", got, want)
	}

	// Create again is fine while there is no config, then refused.
	if err := be.Create(ctx); err != nil {
		t.Fatalf("second Create without a config: %v", err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, backend.BytesSource([]byte("cfg"))); err != nil {
		t.Fatal(err)
	}
	err = be.Create(ctx)
	if err == nil || !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), be.Path()) {
		t.Fatalf("Create over an existing config: %v", err)
	}
}

func TestOpen(t *testing.T) {
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "missing")
	_, err := Open(missing)
	if !errors.Is(err, backend.ErrNoRepository) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open of a missing folder: %v", err)
	}

	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = Open(empty)
	if !errors.Is(err, backend.ErrNoRepository) || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "config") {
		t.Errorf("Open of a folder without config: %v", err)
	}

	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = Open(file); !errors.Is(err, backend.ErrNoRepository) {
		t.Errorf("Open of a file: %v", err)
	}

	be := New(filepath.Join(tmp, "repo"))
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err = Open(be.Path()); !errors.Is(err, backend.ErrNoRepository) {
		t.Errorf("Open of a created repository without config: %v", err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, backend.BytesSource([]byte("cfg"))); err != nil {
		t.Fatal(err)
	}
	opened, err := Open(be.Path())
	if err != nil {
		t.Fatalf("Open of a repository: %v", err)
	}
	data, err := backend.LoadAll(ctx, opened, backend.Handle{Type: backend.ConfigFile})
	if err != nil || string(data) != "cfg" {
		t.Fatalf("config through the opened backend: %q, %v", data, err)
	}
}

func TestLocationIsAbsolute(t *testing.T) {
	tmp := t.TempDir()
	t.Chdir(tmp)
	be := New("repo")
	want := "local:" + filepath.Join(tmp, "repo")
	if be.Location() != want {
		t.Errorf("Location() = %q, want %q", be.Location(), want)
	}
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "repo", "data", "ff")); err != nil {
		t.Fatal(err)
	}
}

func TestFilePlacementAndModes(t *testing.T) {
	be := newRepo(t)
	name := hexID("ab12")
	cases := []struct {
		h   backend.Handle
		rel string
	}{
		{backend.Handle{Type: backend.ConfigFile}, "config"},
		{backend.Handle{Type: backend.KeyFile, Name: name}, "keys/" + name},
		{backend.Handle{Type: backend.SnapshotFile, Name: name}, "snapshots/" + name},
		{backend.Handle{Type: backend.IndexFile, Name: name}, "index/" + name},
		{backend.Handle{Type: backend.LockFile, Name: name}, "locks/" + name},
		{backend.Handle{Type: backend.PackFile, Name: name}, "data/ab/" + name},
	}
	for _, c := range cases {
		content := []byte("content of " + c.rel)
		if err := be.Save(ctx, c.h, backend.BytesSource(content)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(be.Path(), filepath.FromSlash(c.rel))
		got, err := os.ReadFile(p)
		if err != nil || string(got) != string(content) {
			t.Fatalf("%s holds %q, %v", c.rel, got, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o400 {
			t.Errorf("%s has mode %o, want 0400", c.rel, perm)
		}
	}
	checkNoTemp(t, be.Path())
}

func TestGroupReadableRepository(t *testing.T) {
	be := newRepo(t)
	cfg := backend.Handle{Type: backend.ConfigFile}
	if err := be.Save(ctx, cfg, backend.BytesSource([]byte("cfg"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(be.Path(), "config"), 0o440); err != nil {
		t.Fatal(err)
	}
	opened, err := Open(be.Path())
	if err != nil {
		t.Fatal(err)
	}
	// A pack in a missing folder: both the folder and the file follow the
	// config's group permissions.
	if err := os.Remove(filepath.Join(be.Path(), "data", "cd")); err != nil {
		t.Fatal(err)
	}
	name := hexID("cd")
	if err := opened.Save(ctx, backend.Handle{Type: backend.PackFile, Name: name}, backend.BytesSource([]byte("pack"))); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(be.Path(), "data", "cd", name))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o440 {
		t.Errorf("pack has mode %o, want 0440", perm)
	}
	di, err := os.Stat(filepath.Join(be.Path(), "data", "cd"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&0o770 != 0o770&^umask(t) {
		t.Errorf("recreated folder has mode %o, want 0770 less the umask", perm)
	}
}

// umask returns the process umask without changing it for long.
func umask(t *testing.T) fs.FileMode {
	dir := t.TempDir()
	p := filepath.Join(dir, "probe")
	if err := os.Mkdir(p, 0o777); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ fi.Mode().Perm()
}

// checkNoTemp fails if any temporary file is left in the repository.
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedSavesLeaveNoTemp(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback=%v", fallback), func(t *testing.T) {
			if fallback {
				noLinks(t)
			}
			be := newRepo(t)
			h := backend.Handle{Type: backend.PackFile, Name: hexID("ee")}
			data := make([]byte, 3<<20)
			srcs := []backend.Source{
				&backendtest.FailingSource{Data: data, Good: 1 << 20},
				&backendtest.LyingSource{Data: data, Claimed: 4 << 20},
				&backendtest.LyingSource{Data: data, Claimed: 2 << 20},
			}
			for _, src := range srcs {
				if err := be.Save(ctx, h, src); err == nil {
					t.Fatalf("Save from %T: no error", src)
				}
				checkNoTemp(t, be.Path())
			}
			if err := be.Save(ctx, h, backend.BytesSource(data)); err != nil {
				t.Fatal(err)
			}
			err := be.Save(ctx, h, backend.BytesSource(data))
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Save over an existing file: %v", err)
			}
			checkNoTemp(t, be.Path())
		})
	}
}

func TestSaveWhenTargetAppearsDuringWrite(t *testing.T) {
	// Another writer places the file while this Save streams: the final
	// step must not replace it, with links or with the fallback.
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback=%v", fallback), func(t *testing.T) {
			if fallback {
				noLinks(t)
			}
			be := newRepo(t)
			h := backend.Handle{Type: backend.LockFile, Name: hexID("1")}
			path := filepath.Join(be.Path(), "locks", h.Name)
			src := &backendtest.GenSource{Size: 1 << 20}
			once := sync.Once{}
			src.AfterRead = func(int64) {
				once.Do(func() {
					if err := os.WriteFile(path, []byte("winner"), 0o400); err != nil {
						t.Error(err)
					}
				})
			}
			err := be.Save(ctx, h, src)
			if !errors.Is(err, fs.ErrExist) || !backend.IsPermanent(err) {
				t.Fatalf("Save racing another writer: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != "winner" {
				t.Fatalf("the other writer's file now holds %q, %v", got, err)
			}
			checkNoTemp(t, be.Path())
		})
	}
}

func TestErrorsNameTheFile(t *testing.T) {
	be := newRepo(t)
	name := hexID("abcd")
	h := backend.Handle{Type: backend.PackFile, Name: name}
	rel := "data/ab/" + name

	_, err := be.Stat(ctx, h)
	if !errors.Is(err, backend.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "stat "+rel+": ") {
		t.Errorf("Stat of a missing pack: %v", err)
	}
	_, err = be.Load(ctx, h, 0, 0)
	if !errors.Is(err, backend.ErrNotExist) || !strings.HasPrefix(err.Error(), "load "+rel+": ") {
		t.Errorf("Load of a missing pack: %v", err)
	}
	err = be.Remove(ctx, h)
	if !errors.Is(err, backend.ErrNotExist) || !strings.HasPrefix(err.Error(), "remove "+rel+": ") {
		t.Errorf("Remove of a missing pack: %v", err)
	}
	err = be.Save(ctx, h, &backendtest.FailingSource{Data: make([]byte, 100), Good: 10})
	if !errors.Is(err, backendtest.ErrSourceFailed) || !strings.HasPrefix(err.Error(), "save "+rel+": ") {
		t.Errorf("Save from a failing source: %v", err)
	}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("0123456789"))); err != nil {
		t.Fatal(err)
	}
	err = be.Save(ctx, h, backend.BytesSource([]byte("0123456789")))
	if err == nil || err.Error() != "save "+rel+": file already exists" {
		t.Errorf("second Save: %v", err)
	}
	_, err = be.Load(ctx, h, 5, 6)
	if !backend.IsPermanent(err) || !strings.HasPrefix(err.Error(), "load "+rel+": ") || !strings.Contains(err.Error(), "10-byte") {
		t.Errorf("Load past the end: %v", err)
	}
}

func TestLoadOfTruncatedFile(t *testing.T) {
	be := newRepo(t)
	h := backend.Handle{Type: backend.PackFile, Name: hexID("77")}
	if err := be.Save(ctx, h, backend.BytesSource(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	rd, err := be.Load(ctx, h, 500, 400)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	path := filepath.Join(be.Path(), "data", "77", h.Name)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 600); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 200 {
		t.Fatalf("reading a file truncated under the reader: %d bytes, %v", len(got), err)
	}
	// A new Load sees the short file and refuses the range.
	_, err = be.Load(ctx, h, 500, 400)
	if !backend.IsPermanent(err) || !strings.Contains(err.Error(), "data/77/"+h.Name) {
		t.Fatalf("Load of a range past the truncated end: %v", err)
	}
}

func TestListToleratesStrays(t *testing.T) {
	be := newRepo(t)
	dir := be.Path()
	write := func(rel string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("stray"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := map[backend.FileType]string{}
	for _, ft := range backend.FileTypes {
		name := hexID("5a")
		if err := be.Save(ctx, backend.Handle{Type: ft, Name: name}, backend.BytesSource([]byte("good"))); err != nil {
			t.Fatal(err)
		}
		good[ft] = name
		folder := string(ft)
		if ft == backend.PackFile {
			folder = "data/5a"
		}
		write(folder + "/.tmp-123")
		write(folder + "/" + name + "-tmp-456") // restic's temporary name
		write(folder + "/" + strings.ToUpper(hexID("5b")))
		if err := os.Mkdir(filepath.Join(dir, filepath.FromSlash(folder), hexID("5c")), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(dir, "config"), filepath.Join(dir, filepath.FromSlash(folder), hexID("5d"))); err != nil {
			t.Fatal(err)
		}
	}
	write("data/" + hexID("66"))         // directly in data/
	write("data/66/" + hexID("67"))      // wrong folder for its name
	write("data/zz/" + hexID("zz")[:64]) // not a hex folder, invalid name anyway
	write("data/README")
	for _, ft := range backend.FileTypes {
		var got []backend.FileInfo
		err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			got = append(got, fi)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%v): %v", ft, err)
		}
		if len(got) != 1 || got[0].Name != good[ft] || got[0].Size != 4 {
			t.Errorf("List(%v) = %+v, want only %s", ft, got, good[ft])
		}
	}

	// A missing folder lists as empty.
	if err := os.RemoveAll(filepath.Join(dir, "locks")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	for _, ft := range []backend.FileType{backend.LockFile, backend.PackFile} {
		if err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			t.Errorf("List(%v) of a missing folder reported %+v", ft, fi)
			return nil
		}); err != nil {
			t.Errorf("List(%v) of a missing folder: %v", ft, err)
		}
	}
	// ... and Save recreates it.
	h := backend.Handle{Type: backend.LockFile, Name: hexID("01")}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("lock"))); err != nil {
		t.Fatalf("Save into a missing folder: %v", err)
	}
	h = backend.Handle{Type: backend.PackFile, Name: hexID("02")}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("pack"))); err != nil {
		t.Fatalf("Save into a missing data folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "02", h.Name)); err != nil {
		t.Fatal(err)
	}
}

func TestUnsafeNames(t *testing.T) {
	be := newRepo(t)
	for _, h := range []backend.Handle{
		{Type: backend.KeyFile, Name: "../config"},
		{Type: backend.KeyFile, Name: "a/b"},
		{Type: backend.KeyFile, Name: `a\b`},
		{Type: backend.KeyFile, Name: ".."},
		{Type: backend.KeyFile, Name: "."},
		{Type: backend.KeyFile, Name: ".tmp-1"},
		{Type: backend.KeyFile, Name: "a\x00b"},
		{Type: backend.PackFile, Name: "a"},
		{Type: backend.PackFile, Name: "../../x"},
	} {
		if err := be.Save(ctx, h, backend.BytesSource([]byte("x"))); err == nil {
			t.Errorf("Save(%q) succeeded", h.Name)
		}
		if _, err := be.Stat(ctx, h); err == nil || errors.Is(err, backend.ErrNotExist) {
			t.Errorf("Stat(%q): %v, want an invalid-handle error", h.Name, err)
		}
		if _, err := be.Load(ctx, h, 0, 0); err == nil {
			t.Errorf("Load(%q) succeeded", h.Name)
		}
		if err := be.Remove(ctx, h); err == nil {
			t.Errorf("Remove(%q) succeeded", h.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(be.Path(), "config")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an unsafe name reached the config: %v", err)
	}
}

func TestStatAndLoadRejectFolders(t *testing.T) {
	be := newRepo(t)
	name := hexID("aa")
	if err := os.Mkdir(filepath.Join(be.Path(), "keys", name), 0o700); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.KeyFile, Name: name}
	if _, err := be.Stat(ctx, h); err == nil {
		t.Error("Stat of a folder succeeded")
	}
	if _, err := be.Load(ctx, h, 0, 0); err == nil {
		t.Error("Load of a folder succeeded")
	}
	if err := be.Remove(ctx, h); err == nil {
		t.Error("Remove of a folder succeeded")
	}
}

func TestRemoveReadOnlyFile(t *testing.T) {
	be := newRepo(t)
	h := backend.Handle{Type: backend.SnapshotFile, Name: hexID("9")}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("snap"))); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(be.Path(), "snapshots", h.Name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
}

func TestSaveDoesNotTouchSourceBeyondLength(t *testing.T) {
	// A source longer than its length is refused after at most one extra
	// byte is read, not after reading the rest.
	be := newRepo(t)
	src := &countingSource{Source: backend.BytesSource(make([]byte, 10<<20)), claimed: 1 << 20}
	h := backend.Handle{Type: backend.PackFile, Name: hexID("31")}
	if err := be.Save(ctx, h, src); err == nil {
		t.Fatal("no error")
	}
	if src.read > 1<<20+1 {
		t.Errorf("Save read %d bytes from a source of claimed length %d", src.read, 1<<20)
	}
}

type countingSource struct {
	backend.Source
	claimed int64
	read    int64
}

func (c *countingSource) Read(p []byte) (int, error) {
	n, err := c.Source.Read(p)
	c.read += int64(n)
	return n, err
}
func (c *countingSource) Length() int64 { return c.claimed }
