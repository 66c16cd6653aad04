package sftp

import (
	"context"
	"path"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend"
)

// ListLeftovers reports the temporary files of interrupted saves (".tmp-…"
// regular files) in the repository's folders: a save cut off by a dropped
// connection cannot remove its own.
func (b *Backend) ListLeftovers(ctx context.Context, fn func(backend.Leftover) error) error {
	for _, rel := range backend.TempFolders() {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := b.readDir(ctx, rel)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), backend.TempPrefix) || !e.Mode().IsRegular() {
				continue
			}
			lo := backend.Leftover{Path: path.Join(rel, e.Name()), Size: e.Size(), ModTime: e.ModTime()}
			if err := fn(lo); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveLeftover deletes a temporary file ListLeftovers reported; any
// other path is refused.
func (b *Backend) RemoveLeftover(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := backend.CheckTempPath(p); err != nil {
		return err
	}
	return b.do(ctx, func(s *session) error {
		return b.remove(ctx, s, p, path.Join(b.cfg.Path, p))
	})
}
