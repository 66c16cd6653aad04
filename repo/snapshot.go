package repo

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Snapshot is a snapshot file's content, with restic's field names.
type Snapshot struct {
	Time           time.Time        `json:"time"`
	Parent         *ID              `json:"parent,omitempty"`
	Tree           *ID              `json:"tree"`
	Paths          []string         `json:"paths"`
	Hostname       string           `json:"hostname,omitempty"`
	Username       string           `json:"username,omitempty"`
	UID            uint32           `json:"uid,omitempty"`
	GID            uint32           `json:"gid,omitempty"`
	Excludes       []string         `json:"excludes,omitempty"`
	Tags           []string         `json:"tags,omitempty"`
	Original       *ID              `json:"original,omitempty"`
	ProgramVersion string           `json:"program_version,omitempty"`
	Summary        *SnapshotSummary `json:"summary,omitempty"`

	// ID is the snapshot file's name; not stored in the file.
	ID ID `json:"-"`
}

// SnapshotSummary is the backup statistics restic 0.17+ records.
type SnapshotSummary struct {
	BackupStart         time.Time `json:"backup_start"`
	BackupEnd           time.Time `json:"backup_end"`
	FilesNew            uint      `json:"files_new"`
	FilesChanged        uint      `json:"files_changed"`
	FilesUnmodified     uint      `json:"files_unmodified"`
	DirsNew             uint      `json:"dirs_new"`
	DirsChanged         uint      `json:"dirs_changed"`
	DirsUnmodified      uint      `json:"dirs_unmodified"`
	DataBlobs           int       `json:"data_blobs"`
	TreeBlobs           int       `json:"tree_blobs"`
	DataAdded           uint64    `json:"data_added"`
	DataAddedPacked     uint64    `json:"data_added_packed"`
	TotalFilesProcessed uint      `json:"total_files_processed"`
	TotalBytesProcessed uint64    `json:"total_bytes_processed"`
}

// HasTag reports whether the snapshot carries tag.
func (s *Snapshot) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// SaveSnapshot stores sn and returns its ID. The caller must have flushed
// every pack and index the snapshot refers to.
func (r *Repository) SaveSnapshot(ctx context.Context, sn *Snapshot) (ID, error) {
	if sn.Tree == nil {
		return ID{}, fmt.Errorf("save snapshot: no tree")
	}
	id, err := r.saveJSON(ctx, backend.SnapshotFile, sn)
	if err != nil {
		return ID{}, err
	}
	sn.ID = id
	return id, nil
}

// LoadSnapshot loads snapshot id.
func (r *Repository) LoadSnapshot(ctx context.Context, id ID) (*Snapshot, error) {
	var sn Snapshot
	if err := r.loadJSON(ctx, backend.SnapshotFile, id, &sn); err != nil {
		return nil, err
	}
	if sn.Tree == nil {
		return nil, corrupt("snapshots/"+id.String(), "no tree")
	}
	sn.ID = id
	return &sn, nil
}

// ListSnapshots loads every snapshot that can be read (one LIST of
// snapshots/), sorted by time, oldest first. Damaged snapshot files are
// left out, as restic's listing leaves them out, and reported to
// Options.Skipped; see LoadSnapshots.
func (r *Repository) ListSnapshots(ctx context.Context) ([]*Snapshot, error) {
	list, skipped, err := r.LoadSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	r.reportSkipped(skipped...)
	return list, nil
}

// LoadSnapshots loads every snapshot that can be read (one LIST of
// snapshots/), sorted by time, oldest first, and returns separately the
// snapshot files it left out: damaged ones (content not matching the name,
// not decrypting or not decoding) and ones the storage refuses for good.
// One bad snapshot file never blocks the others. A file removed since the
// listing (a concurrent forget) is left out silently. An error is returned
// only when the listing itself fails, or a load fails in a way a retry
// might still fix (so an outage never looks like an empty repository).
// Nothing is reported to Options.Skipped: the caller names what was
// skipped.
func (r *Repository) LoadSnapshots(ctx context.Context) ([]*Snapshot, []SkippedFile, error) {
	var ids []ID
	err := r.be.List(ctx, backend.SnapshotFile, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list snapshots: %w", err)
	}
	sortIDs(ids)
	loaded := make([]*Snapshot, len(ids))
	failed := make([]error, len(ids))
	pos := make(map[ID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	err = forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		sn, err := r.LoadSnapshot(ctx, id)
		switch {
		case err == nil:
			loaded[pos[id]] = sn
		case errors.Is(err, backend.ErrNotExist) && ctx.Err() == nil:
			// Removed since the listing.
		case skippable(ctx, err):
			failed[pos[id]] = err
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var out []*Snapshot
	var skipped []SkippedFile
	for i, sn := range loaded {
		switch {
		case sn != nil:
			out = append(out, sn)
		case failed[i] != nil:
			skipped = append(skipped, SkippedFile{Handle: backend.Handle{Type: backend.SnapshotFile, Name: ids[i].String()}, Err: failed[i]})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, skipped, nil
}

// SnapshotFilter selects snapshots the way restic's --host, --tag and
// --path do: every set field must match. Each Tags entry is a
// comma-separated list that must all be present; any entry may match; an
// empty entry matches untagged snapshots.
type SnapshotFilter struct {
	Hosts []string
	Tags  []string
	Paths []string
}

// Matches reports whether sn passes the filter.
func (f SnapshotFilter) Matches(sn *Snapshot) bool {
	if len(f.Hosts) > 0 && !contains(f.Hosts, sn.Hostname) {
		return false
	}
	if len(f.Tags) > 0 {
		ok := false
		for _, group := range f.Tags {
			if hasTags(sn, ParseTagList(group)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Paths) > 0 {
		// restic: every filter path must be among the snapshot's paths.
		for _, p := range f.Paths {
			if !contains(sn.Paths, path.Clean(p)) && !contains(sn.Paths, p) {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// FindSnapshot resolves "latest", a full ID or a unique short ID. For
// "latest" the newest snapshot matching f is chosen among those that can be
// read (damaged snapshot files are left out and reported to
// Options.Skipped, see ListSnapshots); an ID must match f too, and a
// damaged snapshot named by its ID is an error naming the file.
func (r *Repository) FindSnapshot(ctx context.Context, ref string, f SnapshotFilter) (*Snapshot, error) {
	if ref == "latest" {
		list, err := r.ListSnapshots(ctx)
		if err != nil {
			return nil, err
		}
		for i := len(list) - 1; i >= 0; i-- {
			if f.Matches(list[i]) {
				return list[i], nil
			}
		}
		return nil, fmt.Errorf("latest snapshot: %w", ErrNoSnapshot)
	}
	id, err := r.FindFile(ctx, backend.SnapshotFile, strings.ToLower(ref))
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", ref, err)
	}
	sn, err := r.LoadSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	if !f.Matches(sn) {
		return nil, fmt.Errorf("snapshot %s does not match the filter (host, tag, path): %w", id.Str(), ErrNoSnapshot)
	}
	return sn, nil
}
