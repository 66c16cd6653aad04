// Package local stores a repository in a directory, in restic's layout:
//
//	config
//	keys/ID  snapshots/ID  index/ID  locks/ID
//	data/ID[0:2]/ID
//
// Files are written atomically (temporary file named ".tmp-…", fsync,
// read-only mode, moved into place, fsync of the folder); an existing file is
// never replaced. The move is a hard link followed by removing the temporary
// name, which fails when the target exists even if another process races us;
// where links are not supported it is a check and a rename.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Backend is a repository in a local directory. It is safe for concurrent use.
type Backend struct {
	dir   string // absolute
	modes modes
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Creator        = (*Backend)(nil)
	_ backend.LeftoverLister = (*Backend)(nil)
)

// modes are the permissions of new folders and files (files are then made
// read-only by clearing their write bits).
type modes struct {
	dir  fs.FileMode
	file fs.FileMode
}

// Like restic: private by default, group-readable when the config is.
var defaultModes = modes{dir: 0o700, file: 0o600}

func deriveModes(configInfo fs.FileInfo, err error) modes {
	m := defaultModes
	if err == nil && configInfo.Mode().Perm()&0o040 != 0 {
		m.dir |= 0o070
		m.file |= 0o060
	}
	return m
}

// New returns a backend for the repository in dir without checking that it
// exists; call Create to make a new one. A relative dir is made absolute.
func New(dir string) *Backend {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	fi, err := os.Stat(filepath.Join(dir, "config"))
	return &Backend{dir: dir, modes: deriveModes(fi, err)}
}

// Open returns a backend for the existing repository in dir. When dir does
// not exist or holds no config file, the error wraps backend.ErrNoRepository.
func Open(dir string) (*Backend, error) {
	b := New(dir)
	fi, err := os.Stat(b.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open local repository %s: %w: the directory does not exist", b.dir, backend.ErrNoRepository)
	case err != nil:
		return nil, fmt.Errorf("open local repository %s: %w", b.dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("open local repository %s: %w: not a directory", b.dir, backend.ErrNoRepository)
	}
	fi, err = os.Stat(filepath.Join(b.dir, "config"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open local repository %s: %w: no config file", b.dir, backend.ErrNoRepository)
	case err != nil:
		return nil, fmt.Errorf("open local repository %s: %w", b.dir, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open local repository %s: %w: config is not a regular file", b.dir, backend.ErrNoRepository)
	}
	return b, nil
}

// Location returns "local:" and the absolute path of the repository.
func (b *Backend) Location() string { return "local:" + b.dir }

// Path returns the absolute path of the repository.
func (b *Backend) Path() string { return b.dir }

// Create makes the repository's folders: dir itself, keys, snapshots, index,
// locks, data and data/00 … data/ff. It fails if a config file exists. What
// no retry can fix (permission denied, a read-only or full file system, a
// file in the way) is a permanent error.
func (b *Backend) Create(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create local repository %s: %w", b.dir, err)
	}
	fail := func(err error) error {
		err = fmt.Errorf("create local repository %s: %w", b.dir, err)
		if backend.Unfixable(err) {
			return backend.Permanent(err)
		}
		return err
	}
	cfg := filepath.Join(b.dir, "config")
	if _, err := os.Lstat(cfg); err == nil {
		return fmt.Errorf("create local repository %s: config file already exists: %w", b.dir, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	dirs := []string{b.dir}
	for _, d := range backend.LayoutFolders() {
		dirs = append(dirs, filepath.Join(b.dir, filepath.FromSlash(d)))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, b.modes.dir); err != nil {
			return fail(err)
		}
	}
	return nil
}

// paths returns h's path relative to the repository (with '/', for messages)
// and its absolute path, or an error for a handle that cannot name a file.
func (b *Backend) paths(h backend.Handle) (rel, abs string, err error) {
	rel, err = backend.LayoutPath(h)
	if err != nil {
		return "", "", err
	}
	return rel, filepath.Join(b.dir, filepath.FromSlash(rel)), nil
}

// wrap adds the operation and the file to err, marks missing files with
// backend.ErrNotExist and what retries cannot fix as permanent.
func wrap(op, rel string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s %s: %w", op, rel, backend.NotExist(err))
	if backend.Unfixable(err) {
		return backend.Permanent(err)
	}
	return err
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 512<<10); return &b }}

// linkFile is os.Link; tests replace it to exercise the rename fallback.
var linkFile = os.Link

// Save writes src to a temporary file next to h's place, syncs it, checks its
// length, makes it read-only and moves it into place without replacing an
// existing file (that is an error wrapping fs.ErrExist). On any failure the
// temporary file is removed and nothing is visible under h.
func (b *Backend) Save(ctx context.Context, h backend.Handle, src backend.Source) (err error) {
	rel, path, err := b.paths(h)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer func() { err = wrap("save", rel, err) }()

	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return backend.Permanent(fs.ErrExist)
	}
	size := src.Length()
	if size < 0 {
		return backend.Permanent(fmt.Errorf("negative source length %d", size))
	}
	if err := src.Rewind(); err != nil {
		return fmt.Errorf("rewind source: %w", err)
	}

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, backend.TempPrefix)
	if errors.Is(err, fs.ErrNotExist) {
		// A folder is missing (a repository made by another tool, say).
		if mkErr := os.MkdirAll(dir, b.modes.dir); mkErr != nil {
			return mkErr
		}
		f, err = os.CreateTemp(dir, backend.TempPrefix)
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	placed := false
	defer func() {
		if err != nil {
			_ = f.Close() // closing twice is harmless
			if !placed {
				_ = os.Remove(tmp)
			}
		}
	}()

	if err := b.fill(ctx, f, src, size); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if placed, err = place(tmp, path); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	return nil
}

// fill writes exactly size bytes of src to f, checks that src had no more
// and that f holds them, syncs f and makes it read-only.
func (b *Backend) fill(ctx context.Context, f *os.File, src backend.Source, size int64) error {
	bufp := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(writerOnly{f}, &ctxReader{ctx: ctx, r: io.LimitReader(src, size)}, *bufp)
	copyBuffers.Put(bufp)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n != size {
		return fmt.Errorf("source ended after %d bytes, its length is %d", n, size)
	}
	// The source must be exhausted now.
	var probe [1]byte
	if extra, _ := io.ReadFull(src, probe[:]); extra > 0 {
		return fmt.Errorf("source has more than its length of %d bytes", size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil && !syncUnsupported(err) {
		return fmt.Errorf("sync: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("wrote %d bytes, the file has %d", size, fi.Size())
	}
	// Read-only, as restic leaves its files; some file systems refuse.
	if err := f.Chmod(b.modes.file &^ 0o222); err != nil && !chmodUnsupported(err) {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// place moves the finished temporary file tmp to path, never replacing a
// file there (an error wrapping fs.ErrExist). A hard link never replaces an
// existing file, so concurrent saves of one handle cannot overwrite each
// other; where links are not supported, check and rename. placed says
// whether the file is at path now.
func place(tmp, path string) (placed bool, err error) {
	err = linkFile(tmp, path)
	switch {
	case err == nil:
		_ = os.Remove(tmp)
		return true, nil
	case errors.Is(err, fs.ErrExist):
		return false, backend.Permanent(fs.ErrExist)
	}
	if err := renameNoReplace(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}

// renameMu makes the check and the rename of renameNoReplace one step for
// all saves in this process. Another process could still slip in between on
// a file system without hard links (restic always renames, replacing any file
// in the way, so this is no weaker than restic).
var renameMu sync.Mutex

// renameNoReplace moves tmp to path unless path exists.
func renameNoReplace(tmp, path string) error {
	renameMu.Lock()
	defer renameMu.Unlock()
	if _, err := os.Lstat(path); err == nil {
		return backend.Permanent(fs.ErrExist)
	}
	return os.Rename(tmp, path)
}

// writerOnly hides *os.File's ReadFrom so io.CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }

// ctxReader stops reading once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// open opens h and checks that it is a regular file.
func (b *Backend) open(op string, h backend.Handle) (f *os.File, size int64, rel string, err error) {
	rel, path, err := b.paths(h)
	if err != nil {
		return nil, 0, "", fmt.Errorf("%s: %w", op, err)
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, 0, rel, wrap(op, rel, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, rel, wrap(op, rel, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, rel, backend.Permanent(fmt.Errorf("%s %s: not a regular file", op, rel))
	}
	return f, fi.Size(), rel, nil
}

// Load returns a reader for length bytes of h from offset; length 0 means to
// the end. A range past the end of the file is a permanent error.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	if length < 0 || offset < 0 {
		return nil, backend.Permanent(fmt.Errorf("load %v: invalid range: offset %d, length %d", h, offset, length))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	f, size, rel, err := b.open("load", h)
	if err != nil {
		return nil, err
	}
	if offset > size || offset+int64(length) > size {
		_ = f.Close()
		return nil, backend.Permanent(fmt.Errorf("load %s: range %d+%d is past the end of the %d-byte file", rel, offset, length, size))
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			_ = f.Close()
			return nil, wrap("load", rel, err)
		}
	}
	want := size - offset
	if length > 0 {
		want = int64(length)
	}
	return &rangeReader{ctx: ctx, f: f, left: want, rel: rel}, nil
}

// rangeReader reads exactly left bytes of f; a file that ends sooner (it was
// truncated after Load checked its size) is an error, not a short read.
type rangeReader struct {
	ctx  context.Context
	f    *os.File
	left int64
	rel  string
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, fmt.Errorf("load %s: file ended %d bytes early: %w", r.rel, r.left, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	if err != nil {
		return n, wrap("load", r.rel, err)
	}
	if r.left == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (r *rangeReader) Close() error { return r.f.Close() }

// Stat reports the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	rel, path, err := b.paths(h)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, wrap("stat", rel, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return backend.FileInfo{}, wrap("stat", rel, err)
	}
	if !fi.Mode().IsRegular() {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat %s: not a regular file", rel))
	}
	name := h.Name
	if h.Type == backend.ConfigFile {
		name = ""
	}
	return backend.FileInfo{Name: name, Size: fi.Size()}, nil
}

// List calls fn for every regular file of type t whose name is 64 lowercase
// hex digits. For packs it walks the folders in data/ and reports only files
// in the folder their name's first two characters pick (the only place Load
// finds them); files directly in data/ are ignored. A missing folder lists
// as empty. An error from fn stops the listing and is returned.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	folder, ok := backend.Folder(t)
	if !ok {
		return fmt.Errorf("list %q: not a listable file type", string(t))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", folder, err)
	}
	base := filepath.Join(b.dir, folder)
	if t != backend.PackFile {
		return b.listFolder(ctx, base, folder, "", fn)
	}
	entries, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return wrap("list", folder, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := e.Name()
		if err := b.listFolder(ctx, filepath.Join(base, sub), folder+"/"+sub, sub, fn); err != nil {
			return err
		}
	}
	return nil
}

// listFolder reports the valid names in one folder; prefix, when set, is
// what every reported name must start with.
func (b *Backend) listFolder(ctx context.Context, dir, rel, prefix string, fn func(backend.FileInfo) error) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return wrap("list", rel, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", rel, err)
		}
		name := e.Name()
		if !backend.IsValidName(name) || !strings.HasPrefix(name, prefix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the folder was read
		}
		if err != nil {
			return wrap("list", rel+"/"+name, err)
		}
		if err := fn(backend.FileInfo{Name: name, Size: fi.Size()}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h; a missing file is an error wrapping backend.ErrNotExist.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	rel, path, err := b.paths(h)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return wrap("remove", rel, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return wrap("remove", rel, err)
	}
	if fi.IsDir() {
		return backend.Permanent(fmt.Errorf("remove %s: not a regular file", rel))
	}
	err = os.Remove(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Some systems (Windows) refuse to remove read-only files.
		if chErr := os.Chmod(path, fi.Mode().Perm()|0o200); chErr == nil {
			err = os.Remove(path)
		}
	}
	return wrap("remove", rel, err)
}

// Close does nothing: every operation closes what it opens (readers returned
// by Load are closed by their callers).
func (b *Backend) Close() error { return nil }
