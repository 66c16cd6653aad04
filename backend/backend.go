// Package backend defines where repository bytes live: one small interface
// that the local filesystem, S3-compatible object stores and the in-memory
// test store implement, plus decorators (retries, operation counting) that
// wrap any of them without the implementations knowing.
package backend

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// FileType names one of the repository's top-level kinds of file.
type FileType string

// The file types of a restic repository, named after their folders.
const (
	ConfigFile   FileType = "config"
	KeyFile      FileType = "keys"
	SnapshotFile FileType = "snapshots"
	IndexFile    FileType = "index"
	LockFile     FileType = "locks"
	PackFile     FileType = "data"
)

// FileTypes lists every type that holds named files (config is a single file).
var FileTypes = []FileType{KeyFile, SnapshotFile, IndexFile, LockFile, PackFile}

// Handle names one stored file. Name is empty for the config file.
type Handle struct {
	Type FileType
	Name string
}

func (h Handle) String() string {
	if h.Type == ConfigFile {
		return "config"
	}
	if h.Type == PackFile && len(h.Name) > 2 {
		return "data/" + h.Name[:2] + "/" + h.Name
	}
	return string(h.Type) + "/" + h.Name
}

// Valid reports whether h can name a stored file.
func (h Handle) Valid() error {
	switch h.Type {
	case ConfigFile:
		return nil
	case KeyFile, SnapshotFile, IndexFile, LockFile, PackFile:
		if h.Name == "" {
			return fmt.Errorf("invalid handle %q: empty name", string(h.Type))
		}
		return nil
	default:
		return fmt.Errorf("invalid handle: unknown file type %q", string(h.Type))
	}
}

// FileInfo is what Stat and List report about a stored file.
type FileInfo struct {
	Name string
	Size int64
}

// ErrNotExist is wrapped by every error that reports a missing file.
var ErrNotExist = errors.New("file does not exist")

// ErrNoRepository is returned when a location holds no repository at all.
var ErrNoRepository = errors.New("repository does not exist")

// PermanentError marks an error that retrying cannot fix (missing file,
// denied access, bad checksum, short range). Decorators stop retrying on it.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that IsPermanent reports true for it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err cannot be fixed by retrying: a
// PermanentError, a missing file, a cause no retry fixes (see Unfixable)
// or a context error.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p) || errors.Is(err, ErrNotExist) || Unfixable(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Source is what Save uploads: a reader that knows its length and can start
// over, so a failed upload is retried without buffering the data twice.
type Source interface {
	io.Reader
	// Rewind restarts reading from the first byte.
	Rewind() error
	// Length is the total number of bytes.
	Length() int64
	// MD5 is the digest of all bytes, for Content-MD5 style checks; nil when
	// the source does not know it.
	MD5() []byte
	// SHA256 is the SHA-256 of all bytes; nil when the source does not
	// know it. A pack knows it without reading itself (its name is that
	// digest): S3 then signs the payload with it instead of hashing the
	// body while sending it, and the server checks the body against it.
	SHA256() []byte
}

// Backend stores and retrieves repository files. Implementations must be
// safe for concurrent use.
type Backend interface {
	// Location describes where the repository lives, with no secret in it.
	Location() string
	// Save stores the whole source under h. A file that already exists
	// is an error unless the implementation can replace it atomically.
	Save(ctx context.Context, h Handle, src Source) error
	// Load opens h for reading length bytes from offset; length 0 means
	// to the end. A range past the end is a permanent error.
	Load(ctx context.Context, h Handle, length int, offset int64) (io.ReadCloser, error)
	// Stat reports the size of h, or an error wrapping ErrNotExist.
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	// List calls fn for every file of type t whose name is 64 hex digits.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	// Remove deletes h. Removing a missing file wraps ErrNotExist.
	Remove(ctx context.Context, h Handle) error
	// Close releases resources.
	Close() error
}

// Creator is implemented by backends that must prepare a location before
// the first file is saved (folders, a bucket).
type Creator interface {
	Create(ctx context.Context) error
}

// BytesSource returns a Source over b, computing its MD5 on first use.
func BytesSource(b []byte) Source {
	return &bytesSource{b: b, r: bytes.NewReader(b)}
}

type bytesSource struct {
	b      []byte
	r      *bytes.Reader
	md5    []byte
	sha256 []byte
}

func (s *bytesSource) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *bytesSource) Rewind() error {
	_, err := s.r.Seek(0, io.SeekStart)
	return err
}
func (s *bytesSource) Length() int64 { return int64(len(s.b)) }
func (s *bytesSource) MD5() []byte {
	if s.md5 == nil {
		sum := md5.Sum(s.b)
		s.md5 = sum[:]
	}
	return s.md5
}

// SHA256 hashes the bytes on first use: they are in memory and small
// (config, keys, snapshots, index, locks), and a signed payload then needs
// no hashing while the request is sent.
func (s *bytesSource) SHA256() []byte {
	if s.sha256 == nil {
		sum := sha256.Sum256(s.b)
		s.sha256 = sum[:]
	}
	return s.sha256
}

// LoadAll reads a whole file into memory; only for small files (config,
// keys, snapshots, index, locks), never for packs.
func LoadAll(ctx context.Context, be Backend, h Handle) ([]byte, error) {
	rd, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	buf, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("read %v: %w", h, err)
	}
	return buf, nil
}

// IsValidName reports whether name is 64 lowercase hex digits, the only
// names List reports (temporary files and strays are skipped).
func IsValidName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
