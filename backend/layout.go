package backend

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// The layout of a repository kept as files in folders (the local and SFTP
// backends), restic's:
//
//	config
//	keys/ID  snapshots/ID  index/ID  locks/ID
//	data/ID[0:2]/ID
//
// Writers of such a layout save through temporary files named TempPrefix…
// next to the final name.

// TempPrefix starts the name of every temporary file a folder backend
// writes before moving it into place.
const TempPrefix = ".tmp-"

// Folder is the folder holding the files of type t, relative to the
// repository; false for the config file (a single file) and unknown types.
func Folder(t FileType) (string, bool) {
	switch t {
	case KeyFile, SnapshotFile, IndexFile, LockFile, PackFile:
		return string(t), true
	}
	return "", false
}

// LayoutPath returns h's path relative to the repository, with '/', or an
// error for a handle that cannot name a file there (a name with a slash,
// a NUL or a leading dot, a pack name shorter than its folder).
func LayoutPath(h Handle) (string, error) {
	if err := h.Valid(); err != nil {
		return "", err
	}
	if h.Type == ConfigFile {
		return "config", nil
	}
	name := h.Name
	if strings.ContainsAny(name, `/\`+"\x00") || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("invalid handle %s/%q: not a plain file name", h.Type, name)
	}
	if h.Type == PackFile {
		if len(name) < 2 {
			return "", fmt.Errorf("invalid handle data/%q: shorter than its two-character folder", name)
		}
		return "data/" + name[:2] + "/" + name, nil
	}
	return string(h.Type) + "/" + name, nil
}

// LayoutFolders are the folders of a repository, relative to it, parents
// first: keys, snapshots, index, locks, data, data/00 … data/ff.
func LayoutFolders() []string {
	var dirs []string
	for _, ft := range FileTypes {
		dirs = append(dirs, string(ft))
	}
	for i := 0; i < 256; i++ {
		dirs = append(dirs, fmt.Sprintf("data/%02x", i))
	}
	return dirs
}

// TempFolders are the folders, relative to the repository, where a folder
// backend writes temporary files: the repository itself (config), the
// folders of the file types but data, and data/00 … data/ff.
func TempFolders() []string {
	dirs := []string{"."}
	for _, d := range LayoutFolders() {
		if d != string(PackFile) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// CheckTempPath checks that p names a temporary file in one of the
// TempFolders, as a LeftoverLister's RemoveLeftover must before removing
// anything.
func CheckTempPath(p string) error {
	dir, name := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if strings.HasPrefix(name, TempPrefix) && !strings.ContainsAny(name, `/\`+"\x00") {
		for _, f := range TempFolders() {
			if f == dir {
				return nil
			}
		}
	}
	return Permanent(fmt.Errorf("remove %q: not a temporary file of this repository", p))
}

// NotExist marks err, which reports a missing file (fs.ErrNotExist), so
// that it also matches ErrNotExist; other errors are returned as they are.
func NotExist(err error) error {
	if err == nil || !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotExist) {
		return err
	}
	return &notExistError{err: err}
}

// notExistError matches both ErrNotExist and the underlying error.
type notExistError struct{ err error }

func (e *notExistError) Error() string   { return ErrNotExist.Error() }
func (e *notExistError) Unwrap() []error { return []error{ErrNotExist, e.err} }
