package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend"
)

// ListLeftovers reports the temporary files of interrupted saves (".tmp-…"
// regular files) in the repository's folders.
func (b *Backend) ListLeftovers(ctx context.Context, fn func(backend.Leftover) error) error {
	for _, rel := range backend.TempFolders() {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(b.dir, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return wrap("list", rel, err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), backend.TempPrefix) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // renamed or removed since the folder was read
			}
			p := path.Join(rel, e.Name())
			if err != nil {
				return wrap("list", p, err)
			}
			if err := fn(backend.Leftover{Path: p, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveLeftover deletes a temporary file ListLeftovers reported.
func (b *Backend) RemoveLeftover(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := backend.CheckTempPath(p); err != nil {
		return err
	}
	full := filepath.Join(b.dir, filepath.FromSlash(p))
	fi, err := os.Lstat(full)
	if err != nil {
		return wrap("remove", p, err)
	}
	if !fi.Mode().IsRegular() {
		return backend.Permanent(fmt.Errorf("remove %s: not a regular file", p))
	}
	err = os.Remove(full)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if chErr := os.Chmod(full, fi.Mode().Perm()|0o200); chErr == nil {
			err = os.Remove(full)
		}
	}
	return wrap("remove", p, err)
}
