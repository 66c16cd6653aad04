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

// tempPrefix starts the name of every temporary file Save writes.
const tempPrefix = ".tmp-"

// leftoverFolders are the folders, relative to the repository, where Save
// writes temporary files: the repository itself (config), the folders of
// the file types but data, and data/00 … data/ff.
func leftoverFolders() []string {
	dirs := []string{"."}
	for _, ft := range backend.FileTypes {
		if ft != backend.PackFile {
			dirs = append(dirs, folders[ft])
		}
	}
	for i := 0; i < 256; i++ {
		dirs = append(dirs, fmt.Sprintf("data/%02x", i))
	}
	return dirs
}

// ListLeftovers reports the temporary files of interrupted saves (".tmp-…"
// regular files) in the repository's folders.
func (b *Backend) ListLeftovers(ctx context.Context, fn func(backend.Leftover) error) error {
	for _, rel := range leftoverFolders() {
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
			if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
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
	dir, name := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	ok := strings.HasPrefix(name, tempPrefix) && !strings.ContainsAny(name, `/\`+"\x00")
	if ok {
		ok = false
		for _, f := range leftoverFolders() {
			if f == dir {
				ok = true
				break
			}
		}
	}
	if !ok {
		return backend.Permanent(fmt.Errorf("remove %q: not a temporary file of this repository", p))
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
