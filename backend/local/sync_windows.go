//go:build windows

package local

import "errors"

// syncUnsupported reports whether a failed fsync means the file system
// cannot sync rather than that the data is in danger.
func syncUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }

// chmodUnsupported reports whether a failed chmod means the file system has
// no such permissions.
func chmodUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }

// syncDir does nothing: a folder cannot be opened for syncing on Windows
// (restic skips this step there as well).
func syncDir(string) error { return nil }
