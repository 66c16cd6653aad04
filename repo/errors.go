package repo

import (
	"errors"
	"fmt"

	"github.com/scalr-platform/scalr-backup/internal/crypto"
)

const cryptoOverhead = crypto.Overhead

// ErrWrongPassword means no key file could be opened with the password.
var ErrWrongPassword = errors.New("wrong password or no key found")

// ErrNoSnapshot means a snapshot selector matched nothing.
var ErrNoSnapshot = errors.New("no matching snapshot found")

// ErrAmbiguousID means a short ID prefixes more than one file.
var ErrAmbiguousID = errors.New("ambiguous ID prefix")

// ErrEmptyStream is returned for a stream backup that read zero bytes: an
// empty dump is almost always a failed dump, never a backup.
var ErrEmptyStream = errors.New("stream is empty: refusing to save an empty snapshot")

// ErrNotFound means a path does not exist inside a snapshot.
var ErrNotFound = errors.New("not found")

// ErrBlobMissing means a blob that a tree or snapshot refers to is in no
// index file of the repository, even after reloading the index: the
// repository is damaged (or a prune removed it under a running reader). It
// is not ErrNotFound: the path exists, its data does not.
var ErrBlobMissing = errors.New("is in no index file of the repository")

// CorruptError reports a stored object that failed to decode or verify.
type CorruptError struct {
	Object string // e.g. "index/1234abcd…", "pack 1a2b3c4d, blob 5e6f7a8b"
	Err    error
}

func (e *CorruptError) Error() string { return fmt.Sprintf("%s is damaged: %v", e.Object, e.Err) }
func (e *CorruptError) Unwrap() error { return e.Err }

func corrupt(object string, format string, args ...any) error {
	return &CorruptError{Object: object, Err: fmt.Errorf(format, args...)}
}
