package mem_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/backendtest"
	"github.com/scalr-platform/scalr-backup/backend/mem"
)

func TestContract(t *testing.T) {
	backendtest.RunContract(t, func(t *testing.T) backend.Backend { return mem.New() })
}

var id = strings.Repeat("ab", 32)

func TestPutGetDelete(t *testing.T) {
	be := mem.New()
	ctx := context.Background()
	h := backend.Handle{Type: backend.PackFile, Name: id}
	if _, ok := be.Get(h); ok {
		t.Fatal("Get of an empty backend found something")
	}
	if err := be.Save(ctx, h, backend.BytesSource([]byte("original"))); err != nil {
		t.Fatal(err)
	}
	got, ok := be.Get(h)
	if !ok || string(got) != "original" {
		t.Fatalf("Get = %q, %v", got, ok)
	}
	got[0] = 'X' // Get returns a copy
	if again, _ := be.Get(h); string(again) != "original" {
		t.Fatalf("changing Get's result changed the store: %q", again)
	}

	// Put replaces (corrupts) without the no-overwrite rule, and copies.
	corrupt := []byte("corrupted!")
	be.Put(h, corrupt)
	corrupt[0] = 'Y'
	if data, err := backend.LoadAll(ctx, be, h); err != nil || string(data) != "corrupted!" {
		t.Fatalf("LoadAll after Put = %q, %v", data, err)
	}

	// Config handles ignore their name.
	be.Put(backend.Handle{Type: backend.ConfigFile, Name: "whatever"}, []byte("cfg"))
	if data, ok := be.Get(backend.Handle{Type: backend.ConfigFile}); !ok || string(data) != "cfg" {
		t.Fatalf("config Get = %q, %v", data, ok)
	}

	// Put may plant invalid names; List skips them, Handles shows them.
	stray := backend.Handle{Type: backend.PackFile, Name: "stray.tmp"}
	be.Put(stray, []byte("s"))
	n := 0
	if err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("List: %d files, %v", n, err)
	}
	hs := be.Handles()
	if len(hs) != 3 || hs[0].Type != backend.ConfigFile || hs[1] != h || hs[2] != stray {
		t.Fatalf("Handles = %v", hs)
	}

	if !be.Delete(h) {
		t.Fatal("Delete of a stored file returned false")
	}
	if be.Delete(h) {
		t.Fatal("second Delete returned true")
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Stat after Delete: %v", err)
	}
	// Put of empty data is an empty file, not a missing one.
	be.Put(h, nil)
	if fi, err := be.Stat(ctx, h); err != nil || fi.Size != 0 {
		t.Fatalf("Stat of an empty Put: %+v, %v", fi, err)
	}
}

func TestHook(t *testing.T) {
	be := mem.New()
	ctx := context.Background()
	h := backend.Handle{Type: backend.IndexFile, Name: id}
	var seen []mem.Op
	fail := map[mem.Op]bool{}
	be.SetHook(func(op mem.Op, got backend.Handle) error {
		seen = append(seen, op)
		if op == mem.OpList {
			if got != (backend.Handle{Type: backend.IndexFile}) {
				t.Errorf("List hook got handle %v", got)
			}
		} else if got != h {
			t.Errorf("%s hook got handle %v", op, got)
		}
		if fail[op] {
			return mem.ErrInjected
		}
		return nil
	})

	fail[mem.OpSave] = true
	if err := be.Save(ctx, h, backend.BytesSource([]byte("x"))); !errors.Is(err, mem.ErrInjected) {
		t.Fatalf("Save with an injected error: %v", err)
	}
	if _, ok := be.Get(h); ok {
		t.Fatal("a Save failed by the hook stored the file")
	}
	fail[mem.OpSave] = false
	if err := be.Save(ctx, h, backend.BytesSource([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	for _, op := range []mem.Op{mem.OpLoad, mem.OpStat, mem.OpList, mem.OpRemove} {
		fail[op] = true
	}
	if _, err := be.Load(ctx, h, 0, 0); !errors.Is(err, mem.ErrInjected) {
		t.Errorf("Load: %v", err)
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, mem.ErrInjected) {
		t.Errorf("Stat: %v", err)
	}
	if err := be.List(ctx, backend.IndexFile, func(backend.FileInfo) error { return nil }); !errors.Is(err, mem.ErrInjected) {
		t.Errorf("List: %v", err)
	}
	if err := be.Remove(ctx, h); !errors.Is(err, mem.ErrInjected) {
		t.Errorf("Remove: %v", err)
	}
	if _, ok := be.Get(h); !ok {
		t.Error("a Remove failed by the hook removed the file")
	}
	want := []mem.Op{mem.OpSave, mem.OpSave, mem.OpLoad, mem.OpStat, mem.OpList, mem.OpRemove}
	if len(seen) != len(want) {
		t.Fatalf("hook saw %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("hook saw %v, want %v", seen, want)
		}
	}

	be.SetHook(nil)
	if err := be.Remove(ctx, h); err != nil {
		t.Fatalf("Remove without a hook: %v", err)
	}
}

type badMD5 struct{ backend.Source }

func (badMD5) MD5() []byte { return bytes.Repeat([]byte{1}, 16) }

func TestSaveChecksMD5(t *testing.T) {
	be := mem.New()
	h := backend.Handle{Type: backend.KeyFile, Name: id}
	err := be.Save(context.Background(), h, badMD5{backend.BytesSource([]byte("key"))})
	if err == nil || !backend.IsPermanent(err) {
		t.Fatalf("Save with a wrong MD5: %v, want a permanent error", err)
	}
	if _, ok := be.Get(h); ok {
		t.Fatal("Save with a wrong MD5 stored the file")
	}
}

func TestSaveRewindsSource(t *testing.T) {
	be := mem.New()
	src := backend.BytesSource([]byte("0123456789"))
	if _, err := src.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.LockFile, Name: id}
	if err := be.Save(context.Background(), h, src); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.Get(h); string(got) != "0123456789" {
		t.Fatalf("stored %q", got)
	}
}

func TestSaveExistingIsPermanent(t *testing.T) {
	be := mem.New()
	h := backend.Handle{Type: backend.SnapshotFile, Name: id}
	ctx := context.Background()
	if err := be.Save(ctx, h, backend.BytesSource([]byte("a"))); err != nil {
		t.Fatal(err)
	}
	err := be.Save(ctx, h, backend.BytesSource([]byte("b")))
	if !errors.Is(err, fs.ErrExist) || !backend.IsPermanent(err) {
		t.Fatalf("second Save: %v", err)
	}
	if !strings.Contains(err.Error(), "snapshots/"+id) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestListRejectsConfigAndUnknownTypes(t *testing.T) {
	be := mem.New()
	for _, ft := range []backend.FileType{backend.ConfigFile, "bogus"} {
		if err := be.List(context.Background(), ft, func(backend.FileInfo) error { return nil }); err == nil {
			t.Errorf("List(%q): no error", ft)
		}
	}
}

func TestLocationUnique(t *testing.T) {
	a, b := mem.New(), mem.New()
	if a.Location() == b.Location() || !strings.HasPrefix(a.Location(), "mem:") {
		t.Fatalf("locations %q and %q", a.Location(), b.Location())
	}
}
