package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend"
)

// SkippedFile is a stored file that a read path left out so that one bad
// object does not block the rest of the repository, as restic does
// ("Ignoring …"): a snapshot, index or key file that is damaged (its
// content does not match its name, does not decrypt or does not decode),
// or that can never be read (access denied). Only the operations that need
// the file itself fail.
type SkippedFile struct {
	Handle backend.Handle
	Err    error
}

// Object names the file as the storage does: "snapshots/ID", "index/ID".
func (s SkippedFile) Object() string { return s.Handle.String() }

// String is the reason, naming the file: "snapshots/ID is damaged: …".
func (s SkippedFile) String() string {
	msg := s.Err.Error()
	if strings.Contains(msg, s.Object()) {
		return msg
	}
	return s.Object() + ": " + msg
}

// skippable reports whether a file whose load failed with err may be left
// out of a listing: it is damaged, or the storage refuses it for good. A
// missing file (removed since the listing) and context errors are not: the
// caller drops the first silently and stops on the second; transient
// errors that outlived the retries fail the listing, so that an outage
// never looks like an empty repository.
func skippable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || errors.Is(err, backend.ErrNotExist) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ce *CorruptError
	return errors.As(err, &ce) || backend.IsPermanent(err)
}

// reportSkipped tells Options.Skipped about each file once per repository.
func (r *Repository) reportSkipped(files ...SkippedFile) {
	if r.opts.Skipped == nil {
		return
	}
	for _, f := range files {
		if _, dup := r.skipped.LoadOrStore(f.Handle, true); !dup {
			r.opts.Skipped(f)
		}
	}
}

// DamagedSnapshotsError stops an operation that must know every snapshot
// (prune): some snapshot files could not be read, so what they reference is
// unknown. Nothing was changed.
type DamagedSnapshotsError struct {
	Op      string
	Skipped []SkippedFile
}

func (e *DamagedSnapshotsError) Error() string {
	var b strings.Builder
	ids := make([]string, len(e.Skipped))
	for i, s := range e.Skipped {
		ids[i] = s.Handle.Name
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s.String())
	}
	n := "this snapshot references"
	if len(e.Skipped) > 1 {
		n = "these snapshots reference"
	}
	fmt.Fprintf(&b, "; %s cannot tell which data %s, so it stopped and changed nothing. "+
		"Remove the damaged snapshot files with `scalr-backup forget %s` (restic cannot read them to forget them; "+
		"delete the files by hand there), then run it again", e.Op, n, strings.Join(ids, " "))
	return b.String()
}

// Unwrap gives the files' errors (a CorruptError for damaged ones).
func (e *DamagedSnapshotsError) Unwrap() []error {
	out := make([]error, len(e.Skipped))
	for i, s := range e.Skipped {
		out[i] = s.Err
	}
	return out
}

// DamagedKeyError is returned by Open when no key file opens with the
// password and some key files are damaged: one of them may be the key of
// this password, so the password is not called wrong (that is exit code
// 12; this is an error naming the files).
type DamagedKeyError struct {
	Damaged []SkippedFile
	// Tried is the number of intact key files the password did not open.
	Tried int
}

func (e *DamagedKeyError) Error() string {
	parts := make([]string, len(e.Damaged))
	for i, d := range e.Damaged {
		parts[i] = d.String()
	}
	s := strings.Join(parts, "; ")
	switch e.Tried {
	case 0:
		s += "; there is no other key file"
	case 1:
		s += "; the one other key file does not open with this password"
	default:
		s += fmt.Sprintf("; none of the %d other key files opens with this password", e.Tried)
	}
	return s + " (restore the damaged key file from a copy, or open the repository with another key's password and remove it with `scalr-backup key remove`)"
}

// Unwrap gives the damaged files' errors.
func (e *DamagedKeyError) Unwrap() []error {
	out := make([]error, len(e.Damaged))
	for i, d := range e.Damaged {
		out[i] = d.Err
	}
	return out
}

// skip records index file id as left out when err allows it (see
// skippable), and returns err otherwise.
func (idx *Index) skip(ctx context.Context, id ID, err error) error {
	if !skippable(ctx, err) {
		return err
	}
	idx.mu.Lock()
	idx.skipped[id] = err
	idx.mu.Unlock()
	return nil
}

// Skipped lists the index files left out while loading, by ID.
func (idx *Index) Skipped() []SkippedFile {
	idx.mu.RLock()
	ids := make([]ID, 0, len(idx.skipped))
	for id := range idx.skipped {
		ids = append(ids, id)
	}
	idx.mu.RUnlock()
	sortIDs(ids)
	out := make([]SkippedFile, len(ids))
	idx.mu.RLock()
	for i, id := range ids {
		out[i] = SkippedFile{Handle: backend.Handle{Type: backend.IndexFile, Name: id.String()}, Err: idx.skipped[id]}
	}
	idx.mu.RUnlock()
	return out
}

// missing is the error for blob h not found in the index: ErrBlobMissing,
// naming the damaged index files that were left out (the blob may be
// listed in one of them).
func (idx *Index) missing(h BlobHandle) error {
	skipped := idx.Skipped()
	if len(skipped) == 0 {
		return fmt.Errorf("%v: %w", h, ErrBlobMissing)
	}
	names := make([]string, len(skipped))
	for i, s := range skipped {
		names[i] = s.Object()
	}
	return fmt.Errorf("%v: %w (the damaged index files %s were left out and may list it: `scalr-backup repair index` rebuilds the index from the packs)",
		h, ErrBlobMissing, strings.Join(names, ", "))
}

// checkKeys loads every key file and reports each damaged one (content not
// matching its name, not decoding) as an error: restic 0.16+ refuses to
// open the repository when it reads such a file before a good one, and a
// damaged file may be the only key of some password.
func (c *checkRun) checkKeys(ctx context.Context) error {
	keys, err := c.r.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("check keys: %w", err)
	}
	for _, k := range keys {
		if k.Damaged == nil {
			continue
		}
		obj := backend.Handle{Type: backend.KeyFile, Name: k.ID.String()}.String()
		c.report(CheckProblem{Kind: ProblemKey, Object: obj, Message: checkProblemText(obj, k.Damaged)})
	}
	return nil
}
