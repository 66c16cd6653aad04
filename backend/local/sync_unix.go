//go:build !windows

package local

import (
	"errors"
	"os"
	"runtime"
	"syscall"
)

// syncUnsupported reports whether a failed fsync means the file system
// cannot sync rather than that the data is in danger.
func syncUnsupported(err error) bool {
	return errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EINVAL) ||
		runtime.GOOS == "darwin" && errors.Is(err, syscall.ENOTTY)
}

// chmodUnsupported reports whether a failed chmod means the file system has
// no such permissions (some network and FAT-like mounts).
func chmodUnsupported(err error) bool {
	return errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EPERM)
}

// syncDir flushes dir's entries, so a rename into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if err != nil && syncUnsupported(err) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
