package backend

import (
	"context"
	"time"
)

// Leftover is a file a writer left in the repository's folders when it was
// stopped mid-write (killed, a machine crash): a temporary file that never
// got its final name. Listings skip it (its name is not an ID), so without
// LeftoverLister nothing would ever see or remove it.
type Leftover struct {
	// Path is relative to the repository, with '/': "data/ab/.tmp-123".
	Path    string
	Size    int64
	ModTime time.Time
}

// LeftoverLister is implemented by backends whose writes go through
// temporary files (the local one; an S3 PUT leaves nothing behind).
type LeftoverLister interface {
	// ListLeftovers calls fn for every temporary file of this backend's
	// own writer in the repository's folders.
	ListLeftovers(ctx context.Context, fn func(Leftover) error) error
	// RemoveLeftover deletes one file ListLeftovers reported; any other
	// path is refused.
	RemoveLeftover(ctx context.Context, path string) error
}

// Leftovers returns the LeftoverLister behind be, looking through
// decorators (anything with an Unwrap() Backend method), or false when the
// storage has none.
func Leftovers(be Backend) (LeftoverLister, bool) {
	for be != nil {
		if l, ok := be.(LeftoverLister); ok {
			return l, true
		}
		u, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return nil, false
		}
		be = u.Unwrap()
	}
	return nil, false
}
