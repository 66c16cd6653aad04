package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Creating a repository where it cannot be made is a permanent error
// naming the cause, so the retry decorator gives up at once.
func TestCreateUnfixableIsPermanent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	be := backend.NewRetry(New(filepath.Join(file, "repo")), backend.RetryOptions{InitialDelay: time.Second})
	err := be.(backend.Creator).Create(context.Background())
	if !errors.Is(err, syscall.ENOTDIR) || !backend.IsPermanent(err) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("Create under a file: %v (permanent %v) in %v", err, backend.IsPermanent(err), time.Since(start))
	}
	if !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("error does not say why: %v", err)
	}
}

// A read-only file system (a read-only bind mount, so this works as root):
// Create and Save fail at once with "read-only file system".
func TestReadOnlyFileSystemIsPermanent(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a read-only bind: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount")
	}
	ro := t.TempDir()
	if out, err := exec.Command("mount", "--bind", "-o", "ro", ro, ro).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount read-only: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", ro).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", ro, err, out)
		}
	})
	// mount --bind ignores ro on some kernels until a remount.
	_ = exec.Command("mount", "-o", "remount,bind,ro", ro).Run()
	if err := os.Mkdir(filepath.Join(ro, "probe"), 0o700); !errors.Is(err, syscall.EROFS) {
		t.Skipf("the bind mount is writable (%v)", err)
	}
	start := time.Now()
	be := backend.NewRetry(New(filepath.Join(ro, "repo")), backend.RetryOptions{InitialDelay: time.Second})
	err := be.(backend.Creator).Create(context.Background())
	if !errors.Is(err, syscall.EROFS) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("Create on a read-only file system: %v in %v", err, time.Since(start))
	}
	if !errors.Is(err, fs.ErrPermission) && !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("error does not say why: %v", err)
	}
}
