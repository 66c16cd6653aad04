// Package mem is an in-memory backend.Backend for unit tests. It enforces the
// same rules as the real backends (no overwrite, exact ranges, exact source
// lengths) and lets tests reach behind the interface: read, replace, corrupt
// or delete stored files, and inject errors per operation.
package mem

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Op names a Backend operation, for Hook.
type Op string

// The operations a Hook sees.
const (
	OpSave   Op = "save"
	OpLoad   Op = "load"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpRemove Op = "remove"
)

// Hook is called at the start of every operation with the handle it concerns
// (for List, a handle with only Type set). A non-nil result aborts the
// operation and is returned as its error, unchanged.
type Hook func(op Op, h backend.Handle) error

// Backend keeps repository files in memory. It is safe for concurrent use.
type Backend struct {
	location string

	mu    sync.RWMutex
	files map[backend.Handle][]byte
	hook  Hook
}

var _ backend.Backend = (*Backend)(nil)

var counter atomic.Uint64

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{
		location: "mem:" + strconv.FormatUint(counter.Add(1), 10),
		files:    make(map[backend.Handle][]byte),
	}
}

// key normalises h: the config file has no name.
func key(h backend.Handle) backend.Handle {
	if h.Type == backend.ConfigFile {
		return backend.Handle{Type: backend.ConfigFile}
	}
	return h
}

// SetHook installs fn as the hook for all later operations; nil removes it.
func (b *Backend) SetHook(fn Hook) {
	b.mu.Lock()
	b.hook = fn
	b.mu.Unlock()
}

func (b *Backend) callHook(op Op, h backend.Handle) error {
	b.mu.RLock()
	fn := b.hook
	b.mu.RUnlock()
	if fn == nil {
		return nil
	}
	return fn(op, h)
}

// Put stores a copy of data under h, replacing any file there. It bypasses
// the hook and every check but the handle's validity; tests use it to plant
// or corrupt files.
func (b *Backend) Put(h backend.Handle, data []byte) {
	if err := h.Valid(); err != nil {
		panic(err)
	}
	buf := bytes.Clone(data)
	if buf == nil {
		buf = []byte{}
	}
	b.mu.Lock()
	b.files[key(h)] = buf
	b.mu.Unlock()
}

// Get returns a copy of the file stored under h.
func (b *Backend) Get(h backend.Handle) ([]byte, bool) {
	b.mu.RLock()
	data, ok := b.files[key(h)]
	b.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return bytes.Clone(data), true
}

// Delete removes the file stored under h, bypassing the hook, and reports
// whether it was there.
func (b *Backend) Delete(h backend.Handle) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.files[key(h)]
	delete(b.files, key(h))
	return ok
}

// Handles returns every stored handle, valid names or not, sorted by type
// and name.
func (b *Backend) Handles() []backend.Handle {
	b.mu.RLock()
	hs := make([]backend.Handle, 0, len(b.files))
	for h := range b.files {
		hs = append(hs, h)
	}
	b.mu.RUnlock()
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].Type != hs[j].Type {
			return hs[i].Type < hs[j].Type
		}
		return hs[i].Name < hs[j].Name
	})
	return hs
}

// Location returns "mem:N", N unique to this backend in the process.
func (b *Backend) Location() string { return b.location }

func notExist(op string, h backend.Handle) error {
	return fmt.Errorf("%s %v: %w", op, h, backend.ErrNotExist)
}

// Save stores the whole source under h. Saving a handle that exists fails
// with an error wrapping fs.ErrExist. The source is rewound first, must yield
// exactly Length bytes, and must match its MD5 and SHA-256 when it reports
// them.
func (b *Backend) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	if err := b.callHook(OpSave, h); err != nil {
		return err
	}
	if err := h.Valid(); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	h = key(h)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if b.exists(h) {
		return backend.Permanent(fmt.Errorf("save %v: %w", h, fs.ErrExist))
	}
	size := src.Length()
	if size < 0 {
		return backend.Permanent(fmt.Errorf("save %v: negative source length %d", h, size))
	}
	if err := src.Rewind(); err != nil {
		return fmt.Errorf("save %v: rewind source: %w", h, err)
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(size, 64<<20)))
	n, err := io.Copy(buf, io.LimitReader(src, size+1))
	if err != nil {
		return fmt.Errorf("save %v: read source: %w", h, err)
	}
	if n != size {
		return fmt.Errorf("save %v: source gave %d bytes, its length is %d", h, n, size)
	}
	if sum := src.MD5(); sum != nil {
		got := md5.Sum(buf.Bytes())
		if !bytes.Equal(sum, got[:]) {
			return backend.Permanent(fmt.Errorf("save %v: source MD5 %x does not match its data (%x)", h, sum, got))
		}
	}
	if sum := src.SHA256(); sum != nil {
		// As S3 checks a signed payload's digest.
		got := sha256.Sum256(buf.Bytes())
		if !bytes.Equal(sum, got[:]) {
			return backend.Permanent(fmt.Errorf("save %v: source SHA-256 %x does not match its data (%x)", h, sum, got))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.files[h]; ok {
		return backend.Permanent(fmt.Errorf("save %v: %w", h, fs.ErrExist))
	}
	b.files[h] = buf.Bytes()
	return nil
}

func (b *Backend) exists(h backend.Handle) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.files[h]
	return ok
}

// Load returns a reader for length bytes of h from offset; length 0 means to
// the end. A range past the end is a permanent error.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	if err := b.callHook(OpLoad, h); err != nil {
		return nil, err
	}
	if err := h.Valid(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	h = key(h)
	if length < 0 || offset < 0 {
		return nil, backend.Permanent(fmt.Errorf("load %v: invalid range: offset %d, length %d", h, offset, length))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	b.mu.RLock()
	data, ok := b.files[h]
	b.mu.RUnlock()
	if !ok {
		return nil, notExist("load", h)
	}
	size := int64(len(data))
	if offset > size || offset+int64(length) > size {
		return nil, backend.Permanent(fmt.Errorf("load %v: range %d+%d is past the end of the %d-byte file", h, offset, length, size))
	}
	end := size
	if length > 0 {
		end = offset + int64(length)
	}
	// Stored slices are never changed in place (Put replaces them), so the
	// reader can share the bytes.
	return io.NopCloser(bytes.NewReader(data[offset:end])), nil
}

// Stat reports the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := b.callHook(OpStat, h); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	h = key(h)
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	b.mu.RLock()
	data, ok := b.files[h]
	b.mu.RUnlock()
	if !ok {
		return backend.FileInfo{}, notExist("stat", h)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(data))}, nil
}

// List calls fn for every file of type t whose name is 64 lowercase hex
// digits, in name order. It works on a snapshot taken at the start, so fn may
// call other methods. An error from fn stops the listing and is returned.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := b.callHook(OpList, backend.Handle{Type: t}); err != nil {
		return err
	}
	if err := (backend.Handle{Type: t, Name: "x"}).Valid(); err != nil || t == backend.ConfigFile {
		return fmt.Errorf("list %q: not a listable file type", string(t))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %v: %w", t, err)
	}
	var infos []backend.FileInfo
	b.mu.RLock()
	for h, data := range b.files {
		if h.Type == t && backend.IsValidName(h.Name) {
			infos = append(infos, backend.FileInfo{Name: h.Name, Size: int64(len(data))})
		}
	}
	b.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %v: %w", t, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h; a missing file is an error wrapping backend.ErrNotExist.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := b.callHook(OpRemove, h); err != nil {
		return err
	}
	if err := h.Valid(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	h = key(h)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.files[h]; !ok {
		return notExist("remove", h)
	}
	delete(b.files, h)
	return nil
}

// Close does nothing; the files stay available to Get.
func (b *Backend) Close() error { return nil }

// ErrInjected is a ready-made error for hooks.
var ErrInjected = errors.New("mem: injected error")
