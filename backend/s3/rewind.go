package s3

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// RewindOptions configure Rewind.
type RewindOptions struct {
	// To is the moment to go back to: every key gets its newest version
	// at or before it.
	To time.Time
	// DryRun decides and reports, and changes nothing.
	DryRun bool
	// RemoveNewer hides keys that did not exist at To (created after it)
	// behind a delete marker; without it they are left and reported.
	RemoveNewer bool
	// Report, when set, is told of every change as it is made (or, in a
	// dry run, would be).
	Report func(RewindChange)
}

// Rewind actions.
const (
	// RewindUndelete removes the delete markers above the version of To,
	// which becomes current again (nothing is copied).
	RewindUndelete = "undelete"
	// RewindRestore copies the version of To on top (server-side), since
	// a newer real version (an overwrite) stands above it.
	RewindRestore = "restore"
	// RewindRemove hides a key created after To behind a delete marker
	// (RemoveNewer); its versions stay.
	RewindRemove = "remove"
	// RewindKeepNewer reports a key created after To that is left as it
	// is (RemoveNewer not set).
	RewindKeepNewer = "keep_newer"
)

// RewindChange is one key that rewind changes (or would, or leaves newer).
type RewindChange struct {
	// Key is the object's name in the bucket.
	Key string `json:"key"`
	// Action is one of the Rewind* constants.
	Action string `json:"action"`
	// Version is the version brought back (empty for remove and
	// keep_newer), and Time its last-modified time.
	Version string    `json:"version,omitempty"`
	Time    time.Time `json:"time,omitzero"`
	// Done is false in a dry run.
	Done bool `json:"done"`
}

// RewindResult sums up a rewind.
type RewindResult struct {
	To time.Time `json:"to"`
	// Keys counts the keys looked at (locks/ left out), Unchanged those
	// already as they were at To (or absent then and now).
	Keys      int            `json:"keys"`
	Unchanged int            `json:"unchanged"`
	Changes   []RewindChange `json:"changes"`
	DryRun    bool           `json:"dry_run"`
}

// Rewind brings every key of the repository (locks/ excepted: a lock of
// the past would only block commands now) back to its newest version at
// or before o.To, working from the bucket's raw object versions, so that
// it succeeds when the repository no longer opens (config overwritten,
// keys or everything deleted). It never deletes a version that holds
// data: deletions are undone by deleting the delete markers above the
// wanted version, overwrites by copying the wanted version on top. It
// needs a versioned bucket (Object Lock turns versioning on).
func (b *Backend) Rewind(ctx context.Context, o RewindOptions) (*RewindResult, error) {
	if o.To.IsZero() {
		return nil, errors.New("rewind: no time to go back to")
	}
	prefix := ""
	if b.cfg.Prefix != "" {
		prefix = b.cfg.Prefix + "/"
	}
	versions := map[string][]minio.ObjectInfo{}
	var keys []string
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sawVersion := false
	for obj := range b.client.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}) {
		if obj.Err != nil {
			return nil, wrap("list versions", b.cfg.Bucket+"/"+prefix, obj.Err)
		}
		rel := strings.TrimPrefix(obj.Key, prefix)
		if strings.HasPrefix(rel, "locks/") {
			continue
		}
		if obj.VersionID != "" && obj.VersionID != "null" {
			sawVersion = true
		}
		if _, ok := versions[obj.Key]; !ok {
			keys = append(keys, obj.Key)
		}
		versions[obj.Key] = append(versions[obj.Key], obj)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rewind: list versions of bucket %s: %w", b.cfg.Bucket, err)
	}
	if len(keys) > 0 && !sawVersion {
		return nil, fmt.Errorf("rewind: bucket %s keeps no object versions (versioning is off), so there is nothing to go back to", b.cfg.Bucket)
	}
	sort.Strings(keys)
	res := &RewindResult{To: o.To, Keys: len(keys), Changes: []RewindChange{}, DryRun: o.DryRun}
	for _, key := range keys {
		vs := versions[key]
		for i := range vs {
			vs[i].LastModified = versionTime(vs[i])
		}
		// Newest first, as S3 lists them; the stable sort only guards
		// against a server that does not.
		sort.SliceStable(vs, func(i, j int) bool { return vs[i].LastModified.After(vs[j].LastModified) })
		ch, err := b.rewindKey(ctx, key, vs, o)
		if err != nil {
			return res, err
		}
		if ch == nil {
			res.Unchanged++
			continue
		}
		res.Changes = append(res.Changes, *ch)
		if o.Report != nil {
			o.Report(*ch)
		}
	}
	return res, nil
}

// rewindKey brings one key back; nil means it is already as it was.
func (b *Backend) rewindKey(ctx context.Context, key string, vs []minio.ObjectInfo, o RewindOptions) (*RewindChange, error) {
	target := -1
	for i, v := range vs {
		if !v.LastModified.After(o.To) {
			target = i
			break
		}
	}
	current := vs[0]
	if target < 0 || vs[target].IsDeleteMarker {
		// The key did not exist at To.
		if current.IsDeleteMarker {
			return nil, nil
		}
		ch := &RewindChange{Key: key, Action: RewindKeepNewer}
		if !o.RemoveNewer {
			return ch, nil
		}
		ch.Action = RewindRemove
		if o.DryRun {
			return ch, nil
		}
		// A plain DELETE: a delete marker on top, every version kept.
		err := b.with(ctx, func() error { return b.client.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{}) })
		if err != nil {
			return nil, wrap("rewind remove", key, err)
		}
		ch.Done = true
		return ch, nil
	}
	if target == 0 {
		return nil, nil
	}
	want := vs[target]
	ch := &RewindChange{Key: key, Action: RewindUndelete, Version: want.VersionID, Time: want.LastModified}
	for _, v := range vs[:target] {
		if !v.IsDeleteMarker {
			ch.Action = RewindRestore
		}
	}
	if o.DryRun {
		return ch, nil
	}
	if ch.Action == RewindUndelete {
		for _, v := range vs[:target] {
			err := b.with(ctx, func() error {
				return b.client.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: v.VersionID})
			})
			if err != nil {
				return nil, wrap("rewind undelete (remove delete marker "+v.VersionID+")", key, err)
			}
		}
		ch.Done = true
		return ch, nil
	}
	dst := minio.CopyDestOptions{
		Bucket: b.cfg.Bucket, Object: key,
		// A new metadata set: some servers (versitygw) refuse to copy an
		// object onto its own key otherwise, even from another version.
		ReplaceMetadata: true,
		UserMetadata:    map[string]string{"Scalr-Rewound-From": want.VersionID},
	}
	if b.cfg.Retention > 0 {
		dst.Mode, dst.RetainUntilDate = b.retentionMode(), b.retainUntil(time.Now())
	}
	src := minio.CopySrcOptions{Bucket: b.cfg.Bucket, Object: key, VersionID: want.VersionID}
	err := b.with(ctx, func() error {
		_, err := b.client.CopyObject(ctx, dst, src)
		return err
	})
	if err != nil {
		return nil, wrap("rewind restore (copy version "+want.VersionID+")", key, err)
	}
	ch.Done = true
	return ch, nil
}

// crockford is the base-32 alphabet of ULIDs.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// versionTime is when a version was made. versitygw (1.8.0) reports for a
// noncurrent version the time it stopped being current, and for a delete
// marker another version's time, so its LastModified cannot place a
// version before or after a moment; its version IDs are ULIDs, whose
// first ten characters are the creation time in milliseconds, and that
// time is used when the ID is one. Other services' version IDs (AWS: 32
// characters with '.', '_' or '+'; MinIO: UUIDs with '-') are not ULIDs,
// and their LastModified is the version's own.
func versionTime(v minio.ObjectInfo) time.Time {
	id := v.VersionID
	if len(id) != 26 || id[0] > '7' {
		return v.LastModified
	}
	var ms int64
	for i := 0; i < len(id); i++ {
		d := strings.IndexByte(crockford, id[i])
		if d < 0 {
			return v.LastModified
		}
		if i < 10 {
			ms = ms<<5 | int64(d)
		}
	}
	t := time.UnixMilli(ms).UTC()
	// A plausible creation time only: not before S3 existed, not after
	// the listing said the version was last modified (plus clock slack).
	if t.Year() < 2006 || t.After(v.LastModified.Add(time.Minute)) && !v.LastModified.IsZero() {
		return v.LastModified
	}
	return t
}
