package nightly

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Target is one thing a pass backs up: a container.
type Target struct {
	// Name is the container's name. Its backups are the snapshots tagged
	// Name whose paths are ["/Name"] (see ContainerOf).
	Name string
	// Detail is handed back untouched to BackupFunc and DrillFunc: the
	// Discoverer keeps there whatever they need (the pgstream wiring keeps
	// its pgstream.Target).
	Detail any
	// Problem, when set, says why the Discoverer already knows this
	// selected container cannot be backed up now (not running, no
	// Postgres in it). The pass still hands it to BackupFunc, which fails
	// naming it; only a retired container with a problem is skipped.
	Problem string
}

// Discoverer finds the targets of a pass.
type Discoverer interface {
	Discover(ctx context.Context) ([]Target, error)
}

// DiscoverFunc is a function that is a Discoverer.
type DiscoverFunc func(ctx context.Context) ([]Target, error)

// Discover calls f.
func (f DiscoverFunc) Discover(ctx context.Context) ([]Target, error) { return f(ctx) }

// BackupFunc backs up one target into r as one snapshot tagged t.Name with
// paths ["/NAME"]. It must write no snapshot when it fails, and it must
// return when ctx ends (the repository's stream backup does, and removes
// its lock on the way out).
type BackupFunc func(ctx context.Context, r *repo.Repository, t Target) (BackupResult, error)

// BackupResult is what a BackupFunc reports about a finished backup.
type BackupResult struct {
	SnapshotID repo.ID
	// BytesRead is the plaintext read from the target (the dumps' size).
	BytesRead uint64
	// BytesAdded is the plaintext of the blobs that were new to the
	// repository, BytesStored what they take there (compressed, sealed).
	BytesAdded  uint64
	BytesStored uint64
}

// DrillFunc proves that the latest backup of t restores. A nil error means
// the drill passed.
type DrillFunc func(ctx context.Context, r *repo.Repository, t Target) (DrillResult, error)

// DrillResult is what a DrillFunc reports.
type DrillResult struct {
	// Snapshot is the ID of the backup that was restored.
	Snapshot string
	// RecordID is the snapshot holding the drill's record, if one was
	// saved.
	RecordID repo.ID
}

// Status is a target's outcome in a pass.
type Status string

// Target outcomes.
const (
	StatusOK      Status = "ok"
	StatusFailed  Status = "failed"
	StatusSkipped Status = "skipped" // not started: the pass was cancelled
	// StatusRetired: a retired container (see RetiredTag) that discovery
	// still lists but that cannot be backed up; not a failure.
	StatusRetired Status = "retired"
)

// DefaultPolicy is the ADR's retention: 30 daily, 4 weekly and 6 monthly
// snapshots per container.
func DefaultPolicy() repo.ExpirePolicy { return repo.ExpirePolicy{Daily: 30, Weekly: 4, Monthly: 6} }

// ErrNoTargets fails a pass that found nothing to back up (unless
// PassOptions.AllowEmpty): on a host that runs the platform there is always
// at least the auth database, so an empty discovery means the patterns or
// the Docker access are wrong.
var ErrNoTargets = errors.New("no container to back up was found")

// PassOptions configure one pass.
type PassOptions struct {
	Discoverer Discoverer
	Backup     BackupFunc
	// Policy is the retention policy per container (zero: DefaultPolicy()).
	Policy repo.ExpirePolicy
	// DrillKeep is the drill records' own retention: forget keeps the
	// newest DrillKeep records per host and container (0: DefaultDrillKeep;
	// -1: all of them).
	DrillKeep int
	// Host limits forget and the inventory to the snapshots of this host
	// name, which BackupFunc should record; "" looks at every host. With a
	// Host, every container of its inventory (not retired) that discovery
	// does not list is a failed, missing target.
	Host string
	// AllowEmpty makes a discovery that finds nothing a success.
	AllowEmpty bool
	// TargetTimeout bounds one target's backup (0: no limit).
	TargetTimeout time.Duration
	// SkipForget and SkipPrune leave out the retention steps.
	SkipForget, SkipPrune bool
	// Prune tunes the prune (zero: restic's defaults).
	Prune repo.PruneOptions
	// RemoveStaleLocks removes, before anything else, locks that have not
	// been refreshed for StaleLockAge (default 1 hour): a live holder
	// refreshes its lock every 5 minutes, so such a lock was left by a
	// process that was killed hard, and would block every later forget and
	// prune (or, left by a prune, every backup). Unlike restic's `unlock`
	// this never trusts a host name and process ID, which a container
	// re-uses (PID 1, a fixed hostname) and which several hosts sharing a
	// repository may share.
	RemoveStaleLocks bool
	StaleLockAge     time.Duration
	// Counting is where the storage requests are counted; nil looks for
	// one under r.Backend() (see CountingOf).
	Counting *backend.Counting
	// Now is the clock for timestamps, the retention policy and the age of
	// locks (nil: time.Now).
	Now func() time.Time
	// Logger receives progress (nil: none).
	Logger *slog.Logger
}

// TargetReport is one target's row of a Report.
type TargetReport struct {
	Name     string        `json:"container"`
	Status   Status        `json:"status"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"-"`
	// The byte counts carry restic backup's summary names (as pg-backup
	// --json does): read, added after deduplication, stored (packed).
	BytesRead   uint64 `json:"total_bytes_processed"`
	BytesAdded  uint64 `json:"data_added"`
	BytesStored uint64 `json:"data_added_packed"`
	SnapshotID  string `json:"snapshot_id,omitempty"`
	Error       string `json:"error,omitempty"`
	// Missing marks a container this host has backed up before (and has
	// not retired) that discovery no longer finds at all: removed or
	// renamed. It is a failure of the pass, never a silent drop.
	Missing bool `json:"missing,omitempty"`
	// Err is the error behind Error (nil when OK).
	Err error `json:"-"`
}

// ok reports whether the target needs no attention.
func (t TargetReport) ok() bool { return t.Status == StatusOK || t.Status == StatusRetired }

// MarshalJSON adds duration_seconds.
func (t TargetReport) MarshalJSON() ([]byte, error) {
	type plain TargetReport
	return json.Marshal(struct {
		plain
		Seconds float64 `json:"duration_seconds"`
	}{plain(t), t.Duration.Seconds()})
}

// StageError is a failure of the pass itself, outside any one target.
type StageError struct {
	// Stage is one of open, discover, forget, prune, retention, pass.
	Stage string
	Err   error
}

func (e *StageError) Error() string { return e.Stage + ": " + e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// MarshalJSON writes {"stage": ..., "error": ...}.
func (e *StageError) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"stage": e.Stage, "error": e.Err.Error()})
}

// ForgetGroupReport is one container's retention decision (of its backups,
// or of its drill records).
type ForgetGroupReport struct {
	Container string   `json:"container"`
	Host      string   `json:"host"`
	Kept      int      `json:"kept"`
	Removed   []string `json:"removed,omitempty"`
}

// ForgetReport is the retention step's outcome.
type ForgetReport struct {
	// Policy and Groups are the container backups' retention.
	Policy string              `json:"policy"`
	Groups []ForgetGroupReport `json:"groups"`
	// DrillPolicy and DrillGroups are the drill records' retention, one
	// group per host and container (old and new records alike).
	DrillPolicy string              `json:"drill_policy"`
	DrillGroups []ForgetGroupReport `json:"drill_groups"`
	// Removed counts every snapshot removed, DrillsRemoved the drill
	// records among them.
	Removed       int `json:"removed"`
	DrillsRemoved int `json:"drills_removed"`
	// Deferred are the snapshot files the storage refused to delete
	// (retention, bucket lock rules, no delete permission): they stay, are
	// not kept under retention any more, and a later pass removes them.
	Deferred repo.Deferred `json:"deferred"`
}

// ContainerState is what the repository holds for one container after the
// pass.
type ContainerState struct {
	Container string `json:"container"`
	// Snapshots counts its backups; Newest is the newest one's time.
	Snapshots int       `json:"snapshots"`
	Newest    time.Time `json:"newest"`
	NewestID  string    `json:"newest_id,omitempty"`
	// LastDrill is the newest drill record's time (zero: none) and
	// LastDrillPassed its outcome.
	LastDrill       time.Time `json:"last_drill,omitzero"`
	LastDrillPassed bool      `json:"last_drill_passed"`
	// Retired is the newest retirement record's time (zero: none; see
	// RetiredTag). The container is retired while no backup is newer.
	Retired time.Time `json:"retired,omitzero"`
}

// IsRetired reports whether the container is retired: it has a retirement
// record and no backup made after it (a backup after a retirement, of an
// app deployed again, brings it back).
func (st ContainerState) IsRetired() bool {
	return !st.Retired.IsZero() && !st.Newest.After(st.Retired)
}

// RepositoryStats is the repository's size after a pass.
type RepositoryStats struct {
	// PackBytes and Packs are the pack files (data/) stored: the bulk of
	// the repository's size.
	PackBytes int64 `json:"pack_bytes"`
	Packs     int   `json:"packs"`
	// Snapshots counts every snapshot, of every host.
	Snapshots int `json:"snapshots"`
}

// Report is the outcome of one pass.
type Report struct {
	Host      string           `json:"host"`
	Started   time.Time        `json:"started"`
	Finished  time.Time        `json:"finished"`
	Duration  time.Duration    `json:"-"`
	Targets   []TargetReport   `json:"targets"`
	Forget    *ForgetReport    `json:"forget,omitempty"`
	Prune     *repo.PruneStats `json:"prune,omitempty"`
	Errors    []*StageError    `json:"errors,omitempty"`
	Cancelled bool             `json:"cancelled,omitempty"`
	// Inventory is every container with backups in the repository (of
	// Host), after forget, sorted by name. It is empty when the repository
	// could not be listed.
	Inventory []ContainerState `json:"inventory"`
	// Repository is the repository's size after the pass (nil when it
	// could not be listed).
	Repository *RepositoryStats `json:"repository,omitempty"`
	// Requests are the storage requests the pass made.
	Requests backend.Counts `json:"requests"`
	// Retention is the extension of the kept snapshots' Object Lock
	// retention (nil when the storage keeps none).
	Retention *repo.ExtendStats `json:"retention,omitempty"`
}

// MarshalJSON adds ok and duration_seconds.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		*plain
		OK      bool    `json:"ok"`
		Seconds float64 `json:"duration_seconds"`
	}{(*plain)(r), r.OK(), r.Duration.Seconds()})
}

// OK reports whether everything succeeded: every target was backed up,
// and opening, discovery, forget and prune went through.
func (r *Report) OK() bool {
	if r.Cancelled || len(r.Errors) > 0 {
		return false
	}
	for _, t := range r.Targets {
		if !t.ok() {
			return false
		}
	}
	return true
}

// Failed returns the targets that did not succeed.
func (r *Report) Failed() []TargetReport {
	var out []TargetReport
	for _, t := range r.Targets {
		if !t.ok() {
			out = append(out, t)
		}
	}
	return out
}

// Err summarizes what went wrong, nil when OK. It wraps the stage errors
// (so errors.Is finds, say, backend.ErrNoRepository behind a failed open)
// and the targets' errors.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var errs []error
	for _, e := range r.Errors {
		errs = append(errs, e)
	}
	failed := r.Failed()
	if len(failed) > 0 {
		names := make([]string, len(failed))
		for i, t := range failed {
			names[i] = t.Name
		}
		errs = append(errs, fmt.Errorf("%d of %d container backups failed: %s", len(failed), len(r.Targets), strings.Join(names, ", ")))
	}
	if r.Cancelled && len(errs) == 0 {
		errs = append(errs, context.Canceled)
	}
	return errors.Join(errs...)
}

// State returns the inventory entry of a container, or nil.
func (r *Report) State(container string) *ContainerState {
	for i := range r.Inventory {
		if r.Inventory[i].Container == container {
			return &r.Inventory[i]
		}
	}
	return nil
}

func (r *Report) fail(stage string, err error) {
	r.Errors = append(r.Errors, &StageError{Stage: stage, Err: err})
}

// Pass runs one full pass on r: discover, back up every target (one
// failing target never stops the others), forget by the policy over the
// container backups and by DrillKeep over the drill records (nothing else),
// prune. It never returns nil; everything that went
// wrong is in the report. When ctx ends, the running backup is abandoned
// (it writes no snapshot and removes its lock), the targets not yet started
// are marked skipped, and forget and prune do not start.
func Pass(ctx context.Context, r *repo.Repository, o PassOptions) *Report {
	pr := newPassRun(r, o)
	rep := pr.rep
	start := time.Now()
	var before backend.Counts
	if pr.counting != nil {
		before = pr.counting.Snapshot()
	}
	defer func() {
		rep.Finished = pr.now().UTC()
		rep.Duration = time.Since(start)
		if pr.counting != nil {
			rep.Requests = countsDelta(before, pr.counting.Snapshot())
		}
		if ctx.Err() != nil {
			rep.Cancelled = true
		}
	}()

	if o.RemoveStaleLocks {
		removeAbandonedLocks(ctx, r, o.StaleLockAge, pr.now(), pr.log)
	}
	targets := pr.discover(ctx)
	retired := pr.retired(ctx, targets)
	seen := map[string]bool{}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, pr.backupTarget(ctx, t, retired, seen))
	}
	var snaps []*repo.Snapshot
	listed := false
	if ctx.Err() == nil && !o.SkipForget {
		snaps, listed = pr.forget(ctx)
	}
	if ctx.Err() == nil && !o.SkipPrune {
		pr.prune(ctx)
	}
	if ctx.Err() == nil {
		extendRetention(ctx, r, rep, pr.log)
	}
	if !listed && ctx.Err() == nil {
		all, err := r.ListSnapshots(ctx)
		if err != nil {
			pr.log.Warn("listing snapshots for the inventory failed", "error", err)
		} else {
			snaps, listed = all, true
		}
	}
	if listed {
		rep.Inventory = Inventory(snaps, o.Host)
		if o.Host != "" && !discoveryFailed(rep) {
			rep.Targets = append(rep.Targets, missingTargets(rep.Inventory, seen, pr.now().UTC(), pr.log)...)
		}
		if ctx.Err() == nil {
			rep.Repository = repositoryStats(ctx, r, len(snaps), pr.log)
		}
	}
	if ctx.Err() != nil {
		pr.log.Warn("pass cancelled", "error", ctx.Err())
	}
	return rep
}

// passRun is one pass's settings with their defaults filled in, and its
// report.
type passRun struct {
	r        *repo.Repository
	o        PassOptions
	now      func() time.Time
	log      *slog.Logger
	policy   repo.ExpirePolicy
	counting *backend.Counting
	rep      *Report
}

func newPassRun(r *repo.Repository, o PassOptions) *passRun {
	pr := &passRun{r: r, o: o, now: o.Now, log: o.Logger, policy: o.Policy, counting: o.Counting}
	if pr.now == nil {
		pr.now = time.Now
	}
	if pr.log == nil {
		pr.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if pr.policy.Empty() {
		pr.policy = DefaultPolicy()
	}
	if pr.counting == nil {
		pr.counting = CountingOf(r.Backend())
	}
	pr.rep = &Report{Host: o.Host, Started: pr.now().UTC(), Targets: []TargetReport{}, Inventory: []ContainerState{}}
	return pr
}

// discover lists the targets; a failure, or none found (unless allowed),
// fails the pass's discover stage.
func (pr *passRun) discover(ctx context.Context) []Target {
	if pr.o.Discoverer == nil || pr.o.Backup == nil {
		pr.rep.fail("discover", errors.New("nightly: PassOptions needs a Discoverer and a BackupFunc"))
		return nil
	}
	targets, err := pr.o.Discoverer.Discover(ctx)
	switch {
	case err != nil:
		pr.rep.fail("discover", err)
		pr.log.Error("discovery failed", "error", err)
	case len(targets) == 0 && !pr.o.AllowEmpty:
		pr.rep.fail("discover", ErrNoTargets)
		pr.log.Error("discovery found no container to back up")
	default:
		names := make([]string, len(targets))
		for i, t := range targets {
			names[i] = t.Name
		}
		pr.log.Info("discovered containers", "count", len(targets), "containers", names)
	}
	return targets
}

// retired is the set of retired containers, for the targets discovery
// lists but that cannot be backed up: read only when there is one.
func (pr *passRun) retired(ctx context.Context, targets []Target) map[string]bool {
	var retired map[string]bool
	for _, t := range targets {
		if t.Problem == "" || retired != nil {
			continue
		}
		retired = map[string]bool{}
		all, err := pr.r.ListSnapshots(ctx)
		if err != nil {
			pr.log.Warn("listing snapshots for retirement records failed", "error", err)
			continue
		}
		for _, st := range Inventory(all, pr.o.Host) {
			if st.IsRetired() {
				retired[st.Container] = true
			}
		}
	}
	return retired
}

// backupTarget backs up one target (unless cancelled, retired, invalid or
// listed twice) and returns its row; seen gets its name.
func (pr *passRun) backupTarget(ctx context.Context, t Target, retired, seen map[string]bool) TargetReport {
	log := pr.log
	tr := TargetReport{Name: t.Name, Started: pr.now().UTC()}
	switch {
	case ctx.Err() != nil:
		tr.Status, tr.Err = StatusSkipped, fmt.Errorf("not started: %w", ctx.Err())
	case t.Problem != "" && retired[t.Name]:
		seen[t.Name] = true
		tr.Status = StatusRetired
		log.Info("retired container left alone", "container", t.Name, "problem", t.Problem)
	case t.Name == "" || strings.Contains(t.Name, "/"):
		tr.Status, tr.Err = StatusFailed, fmt.Errorf("invalid container name %q", t.Name)
	case seen[t.Name]:
		tr.Status, tr.Err = StatusFailed, fmt.Errorf("container %s discovered twice", t.Name)
	default:
		seen[t.Name] = true
		log.Info("backing up", "container", t.Name)
		t0 := time.Now()
		res, err := runBackup(ctx, pr.r, t, pr.o.Backup, pr.o.TargetTimeout)
		tr.Duration = time.Since(t0)
		if err != nil {
			tr.Status, tr.Err = StatusFailed, err
		} else {
			tr.Status = StatusOK
			tr.SnapshotID = res.SnapshotID.String()
			tr.BytesRead, tr.BytesAdded, tr.BytesStored = res.BytesRead, res.BytesAdded, res.BytesStored
		}
	}
	if tr.Err != nil {
		tr.Error = tr.Err.Error()
	}
	switch tr.Status {
	case StatusOK:
		log.Info("backup done", "container", t.Name, "snapshot", tr.SnapshotID[:8],
			"duration", tr.Duration.Round(time.Millisecond).String(), "total_bytes_processed", tr.BytesRead, "data_added", tr.BytesAdded)
	case StatusFailed:
		log.Error("backup failed", "container", t.Name, "duration", tr.Duration.Round(time.Millisecond).String(), "error", tr.Error)
	}
	return tr
}

// forget applies the retention policy per container and the drill-record
// policy; it returns the snapshots that remain, listed (false: not known).
func (pr *passRun) forget(ctx context.Context) ([]*repo.Snapshot, bool) {
	fr, remaining, err := forgetContainers(ctx, pr.r, pr.policy, drillPolicy(pr.o.DrillKeep), pr.o.Host, pr.now(), pr.log)
	if err != nil {
		pr.rep.fail("forget", err)
		pr.log.Error("forget failed", "error", err)
		return nil, false
	}
	pr.rep.Forget = fr
	pr.log.Info("forget done", "policy", fr.Policy, "removed", fr.Removed, "drill_policy", fr.DrillPolicy, "drills_removed", fr.DrillsRemoved)
	return remaining, true
}

// prune prunes, logging its steps.
func (pr *passRun) prune(ctx context.Context) {
	po := pr.o.Prune
	if po.Progress == nil {
		// Prune's steps are few (one per phase and repacked pack) and
		// a long prune must not look like a hang in the log.
		po.Progress = func(msg string) { pr.log.Info("prune progress", "step", msg) }
	}
	st, err := pr.r.Prune(ctx, po)
	if err != nil {
		pr.rep.fail("prune", err)
		pr.log.Error("prune failed", "error", err)
		return
	}
	pr.rep.Prune = st
	pr.log.Info("prune done", "packs_removed", st.PacksRemove+st.PacksUnreferenced, "packs_repacked", st.PacksRepack, "bytes_freed", st.RemoveSize+st.UnreferencedSize)
	if st.Deferred.Files > 0 {
		pr.log.Warn("prune deferred deletions the storage refuses", "deferred", st.Deferred.String())
	}
}

// discoveryFailed reports whether the pass could not tell which containers
// exist (open or discover failed).
func discoveryFailed(rep *Report) bool {
	for _, e := range rep.Errors {
		if e.Stage == "discover" || e.Stage == "open" {
			return true
		}
	}
	return false
}

// missingTargets are the containers this host has backed up (inv), not
// retired, that discovery did not list (seen): each one is a failed row
// naming it, so a removed or renamed database never drops out in silence.
func missingTargets(inv []ContainerState, seen map[string]bool, now time.Time, log *slog.Logger) []TargetReport {
	var out []TargetReport
	for _, st := range inv {
		if seen[st.Container] || st.Newest.IsZero() || st.IsRetired() {
			continue
		}
		err := fmt.Errorf("%w: container %s was backed up by this host (newest backup %s, %s) but is not found now: "+
			"start it again, or if it was removed on purpose, retire it with: scalr-backup retire %s",
			ErrMissing, st.Container, short(st.NewestID), st.Newest.UTC().Format(time.RFC3339), st.Container)
		log.Error("backup failed", "container", st.Container, "error", err.Error())
		out = append(out, TargetReport{Name: st.Container, Status: StatusFailed, Started: now, Missing: true, Err: err, Error: err.Error()})
	}
	return out
}

// ErrMissing marks a container of the expected set that discovery does not
// list at all.
var ErrMissing = errors.New("missing")

// repositoryStats lists the pack files for the repository's size; nil when
// that fails.
func repositoryStats(ctx context.Context, r *repo.Repository, snapshots int, log *slog.Logger) *RepositoryStats {
	st := &RepositoryStats{Snapshots: snapshots}
	err := r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		st.Packs++
		st.PackBytes += fi.Size
		return nil
	})
	if err != nil {
		log.Warn("listing the packs for the repository's size failed", "error", err)
		return nil
	}
	return st
}

// DefaultStaleLockAge is how old a lock must be before a pass removes it.
const DefaultStaleLockAge = time.Hour

// removeAbandonedLocks removes the locks not refreshed for age at now.
func removeAbandonedLocks(ctx context.Context, r *repo.Repository, age time.Duration, now time.Time, log *slog.Logger) {
	if age <= 0 {
		age = DefaultStaleLockAge
	}
	locks, err := r.ListLocks(ctx)
	if err != nil {
		log.Warn("listing locks failed", "error", err)
		return
	}
	for _, li := range locks {
		if now.Sub(li.Time) <= age {
			continue
		}
		h := backend.Handle{Type: backend.LockFile, Name: li.ID.String()}
		if err := r.Backend().Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
			log.Warn("removing an abandoned lock failed", "lock", li.ID.Str(), "error", err)
			continue
		}
		log.Warn("removed an abandoned lock (not refreshed for over "+age.String()+")",
			"lock", li.ID.Str(), "exclusive", li.Exclusive, "lock_host", li.Hostname, "pid", li.PID,
			"created", li.Time.UTC().Format(time.RFC3339))
	}
}

// runBackup runs one target's backup with its own timeout and turns a panic
// into an error, so that one target can never take the pass down.
func runBackup(ctx context.Context, r *repo.Repository, t Target, fn BackupFunc, timeout time.Duration) (res BackupResult, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("backup of %s took longer than %s", t.Name, timeout))
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("backup of %s panicked: %v\n%s", t.Name, p, debug.Stack())
		}
	}()
	res, err = fn(ctx, r, t)
	if err != nil {
		if c := context.Cause(ctx); c != nil && ctx.Err() != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%v)", err, c)
		}
		return res, err
	}
	if res.SnapshotID.IsNull() {
		return res, fmt.Errorf("backup of %s returned no snapshot ID", t.Name)
	}
	return res, nil
}

// drillPolicy is the drill records' retention for PassOptions.DrillKeep.
func drillPolicy(keep int) repo.ExpirePolicy {
	switch {
	case keep == 0:
		keep = DefaultDrillKeep
	case keep < 0:
		keep = -1
	}
	return repo.ExpirePolicy{Last: keep}
}

// extendRetention keeps what the kept snapshots need under Object Lock
// retention (see repo.ExtendRetention); the snapshots this pass's forget
// chose to remove, deleted or deferred, are not kept.
func extendRetention(ctx context.Context, r *repo.Repository, rep *Report, log *slog.Logger) {
	exclude := map[repo.ID]bool{}
	if f := rep.Forget; f != nil {
		for _, g := range append(append([]ForgetGroupReport(nil), f.Groups...), f.DrillGroups...) {
			for _, s := range g.Removed {
				if id, err := repo.ParseID(s); err == nil {
					exclude[id] = true
				}
			}
		}
		if f.Deferred.Files > 0 {
			log.Warn("forget deferred deletions the storage refuses", "deferred", f.Deferred.String())
		}
	}
	st, err := r.ExtendRetention(ctx, repo.ExtendOptions{Exclude: exclude})
	if err != nil {
		rep.fail("retention", err)
		log.Error("retention extension failed", "error", err)
		return
	}
	if st != nil {
		rep.Retention = st
		log.Info("retention extended", "objects", st.Objects, "extended", st.Extended, "until", st.Until, "earliest_end", st.EarliestEnd)
	}
}

// forgetContainers applies policy to the container backups (ContainerOf) of
// host ("" for all hosts), grouped by host and paths as restic's default
// does, so that no two containers ever share a group; and drills, a
// keep-last policy, to the drill records (drillOf) of host, grouped by host
// and container (their one path, /drill/CONTAINER.json, names it, so this
// too is restic's host,paths grouping: what `restic forget --tag drill
// --keep-last N` decides). Any other snapshot is left alone. The decisions
// are restic's (repo.ApplyPolicyAt); the removal takes an exclusive lock.
// It returns the snapshots left.
func forgetContainers(ctx context.Context, r *repo.Repository, policy, drills repo.ExpirePolicy, host string, now time.Time, log *slog.Logger) (*ForgetReport, []*repo.Snapshot, error) {
	// A damaged snapshot file is left out (as restic's forget leaves it
	// out) and named; prune then stops naming it too.
	all, skipped, err := r.LoadSnapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range skipped {
		log.Warn("a snapshot file is damaged: left out of forget (check names it; forget ID removes it)", "snapshot", s.Handle.Name, "error", s.Err)
	}
	var backups, records []*repo.Snapshot
	for _, sn := range all {
		if host != "" && sn.Hostname != host {
			continue
		}
		if _, ok := ContainerOf(sn); ok {
			backups = append(backups, sn)
		} else if _, _, ok := drillOf(sn); ok {
			records = append(records, sn)
		}
	}
	fr := &ForgetReport{Policy: policy.String(), Groups: []ForgetGroupReport{}, DrillPolicy: drills.String(), DrillGroups: []ForgetGroupReport{}}
	var ids []repo.ID
	apply := func(sel []*repo.Snapshot, p repo.ExpirePolicy, nameOf func(*repo.Snapshot) string, what string) ([]ForgetGroupReport, error) {
		groups, err := repo.GroupSnapshots(sel, repo.DefaultGroupBy)
		if err != nil {
			return nil, err
		}
		out := []ForgetGroupReport{}
		for _, g := range groups {
			keep, remove, _ := repo.ApplyPolicyAt(g.Snapshots, p, now)
			if len(keep) == 0 {
				return nil, &repo.ForgetGroupError{Key: g.Key}
			}
			name := nameOf(g.Snapshots[0])
			gr := ForgetGroupReport{Container: name, Host: g.Key.Hostname, Kept: len(keep)}
			for _, sn := range remove {
				gr.Removed = append(gr.Removed, sn.ID.String())
				ids = append(ids, sn.ID)
			}
			if len(remove) > 0 {
				log.Info("forgetting "+what, "container", name, "host", g.Key.Hostname, "kept", len(keep), "removed", len(remove))
			}
			out = append(out, gr)
		}
		return out, nil
	}
	fr.Groups, err = apply(backups, policy, func(sn *repo.Snapshot) string { name, _ := ContainerOf(sn); return name }, "snapshots")
	if err != nil {
		return nil, nil, err
	}
	backupIDs := len(ids)
	fr.DrillGroups, err = apply(records, drills, func(sn *repo.Snapshot) string { name, _, _ := drillOf(sn); return name }, "drill records")
	if err != nil {
		return nil, nil, err
	}
	drillIDs := map[repo.ID]bool{}
	for _, id := range ids[backupIDs:] {
		drillIDs[id] = true
	}
	removed := map[repo.ID]bool{}
	if len(ids) > 0 {
		done, err := r.RemoveSnapshotsDeferring(ctx, ids, &fr.Deferred)
		for _, id := range done {
			removed[id] = true
			if drillIDs[id] {
				fr.DrillsRemoved++
			}
		}
		fr.Removed = len(done)
		if err != nil {
			return fr, nil, err
		}
	}
	left := make([]*repo.Snapshot, 0, len(all))
	for _, sn := range all {
		if !removed[sn.ID] {
			left = append(left, sn)
		}
	}
	return fr, left, nil
}

// Drill record tags, as pgstream writes them: every record has DrillTag,
// DrillOfTag(CONTAINER) and DrillPassedTag or DrillFailedTag; its one path
// is /drill/CONTAINER.json. Records written before DrillOfTag existed carry
// the bare container name instead: drillOf reads both, so a repository
// keeps its drill history. The bare name made `restic dump --tag CONTAINER
// latest /CONTAINER/DB.pgdump` pick a drill record (restic's latest is the
// newest snapshot with the tag) and fail.
const (
	DrillTag       = "drill"
	DrillPassedTag = "drill-passed"
	DrillFailedTag = "drill-failed"
	// DrillOfTagPrefix starts the tag naming the drilled container. A Docker
	// container name never holds ':' (nor ','), so the tag can be no
	// container's own tag, and restic takes it as it is in --tag.
	DrillOfTagPrefix = "drill-of:"
)

// DrillOfTag is the tag of the drill records of container name:
// drill-of:NAME.
func DrillOfTag(name string) string { return DrillOfTagPrefix + name }

// ContainerOf reports whether sn is a container backup and of which
// container: its only path is "/NAME" (one path element), it is tagged
// NAME, and it is not a drill record.
func ContainerOf(sn *repo.Snapshot) (string, bool) {
	if len(sn.Paths) != 1 || sn.HasTag(DrillTag) {
		return "", false
	}
	name, ok := strings.CutPrefix(sn.Paths[0], "/")
	if !ok || name == "" || strings.Contains(name, "/") || !sn.HasTag(name) {
		return "", false
	}
	return name, true
}

// drillOf reports whether sn is a drill record and of which container: it
// is tagged DrillTag, its only path is /drill/NAME.json, and it is tagged
// DrillOfTag(NAME) or, as records were first written, NAME.
func drillOf(sn *repo.Snapshot) (name string, passed, ok bool) {
	if len(sn.Paths) != 1 || !sn.HasTag(DrillTag) {
		return "", false, false
	}
	rest, ok1 := strings.CutPrefix(sn.Paths[0], "/drill/")
	name, ok2 := strings.CutSuffix(rest, ".json")
	if !ok1 || !ok2 || name == "" || strings.Contains(name, "/") || !(sn.HasTag(DrillOfTag(name)) || sn.HasTag(name)) {
		return "", false, false
	}
	return name, sn.HasTag(DrillPassedTag), true
}

// Inventory summarizes the container backups and drill records of host ("":
// every host) in snaps, by container, sorted by name.
func Inventory(snaps []*repo.Snapshot, host string) []ContainerState {
	by := map[string]*ContainerState{}
	get := func(name string) *ContainerState {
		st, ok := by[name]
		if !ok {
			st = &ContainerState{Container: name}
			by[name] = st
		}
		return st
	}
	for _, sn := range snaps {
		if host != "" && sn.Hostname != host {
			continue
		}
		if name, ok := ContainerOf(sn); ok {
			st := get(name)
			st.Snapshots++
			if sn.Time.After(st.Newest) {
				st.Newest, st.NewestID = sn.Time, sn.ID.String()
			}
			continue
		}
		if name, passed, ok := drillOf(sn); ok {
			st := get(name)
			if sn.Time.After(st.LastDrill) {
				st.LastDrill, st.LastDrillPassed = sn.Time, passed
			}
			continue
		}
		if name, ok := RetiredOf(sn); ok {
			st := get(name)
			if sn.Time.After(st.Retired) {
				st.Retired = sn.Time
			}
		}
	}
	out := make([]ContainerState, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out
}

// CountingOf finds the request counter in a backend stack: the backend
// itself, the Counts of an open.Opened, or below any decorator with an
// Unwrap method. It returns nil when there is none.
func CountingOf(be backend.Backend) *backend.Counting {
	for i := 0; be != nil && i < 16; i++ {
		switch v := be.(type) {
		case *backend.Counting:
			return v
		case *open.Opened:
			if v.Counts != nil {
				return v.Counts
			}
			be = v.Backend
			continue
		}
		u, ok := be.(interface{ Unwrap() backend.Backend })
		if !ok {
			return nil
		}
		be = u.Unwrap()
	}
	return nil
}

func countsDelta(a, b backend.Counts) backend.Counts { return b.Sub(a) }

// Retirement records: `scalr-backup retire CONTAINER` saves a small
// snapshot whose one path is /retired/CONTAINER.json, tagged RetiredTag and
// RetiredOfTag(CONTAINER), on this host. A retired container leaves the
// expected set (no stale alert, no missing failure) until a backup newer
// than the record brings it back. Forget never touches these records.
const (
	RetiredTag         = "retired"
	RetiredOfTagPrefix = "retired-of:"
)

// RetiredOfTag is the tag of container name's retirement records.
func RetiredOfTag(name string) string { return RetiredOfTagPrefix + name }

// RetiredRecordPath is where a retirement record lives in its snapshot.
func RetiredRecordPath(name string) string { return "/retired/" + name + ".json" }

// RetiredOf reports whether sn is a retirement record and of which
// container.
func RetiredOf(sn *repo.Snapshot) (string, bool) {
	if len(sn.Paths) != 1 || !sn.HasTag(RetiredTag) {
		return "", false
	}
	rest, ok1 := strings.CutPrefix(sn.Paths[0], "/retired/")
	name, ok2 := strings.CutSuffix(rest, ".json")
	if !ok1 || !ok2 || name == "" || strings.Contains(name, "/") || !sn.HasTag(RetiredOfTag(name)) {
		return "", false
	}
	return name, true
}
