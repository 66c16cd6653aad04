package repo

// Retention: which snapshots a policy keeps. The selection is restic's
// (0.18.1) exactly, so that `forget` here and `restic forget` with the same
// flags remove the same snapshots:
//
//   - Snapshots are grouped (by default by host and paths), and the policy
//     is applied to each group on its own.
//   - In a group, snapshots are ordered newest first. A count policy
//     (--keep-daily 7, ...) keeps the newest snapshot of each period
//     (hour, day, ISO week, month, year) that has a snapshot, until the
//     count is used up; -1 means no limit. A period without a snapshot
//     uses up nothing.
//   - When a count is not used up by the time the oldest snapshot of the
//     group is reached, that oldest snapshot is kept as well, even if its
//     period already has a kept snapshot ("oldest daily snapshot"). The
//     within-policies (--keep-within-daily 30d, ...) do the same for an
//     oldest snapshot inside their window.
//   - Periods are taken from each snapshot's own wall clock: the time zone
//     offset recorded in the snapshot file, not the zone of the process.
//   - --keep-within* windows end at the newest snapshot of the group that is
//     not in the future (snapshots in the future are always inside); a
//     snapshot is inside when it is strictly after newest minus the
//     duration, with years, months and days subtracted on the calendar.
//   - --keep-tag keeps every snapshot that has all tags of one of the lists.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// ErrNoPolicy is returned by Forget for an empty policy: restic refuses to
// remove anything then, unless explicitly told to remove everything the
// filter selects.
var ErrNoPolicy = errors.New("no policy was specified, no snapshots will be removed")

// Duration is restic's retention duration: whole hours, days, months and
// years, written like 1y5m7d2h. Months and years are calendar months and
// years.
type Duration struct {
	Hours, Days, Months, Years int
}

// ParseDuration parses restic's duration syntax: numbers, each followed by
// one of the units y, m, d or h, in any order, e.g. "1y5m7d2h" or "36h". A
// unit given twice takes the last value. The empty string is the zero
// duration (no policy). Surrounding white space is ignored. Negative numbers
// parse (restic rejects them later, as ExpirePolicy.Validate does).
func ParseDuration(s string) (Duration, error) {
	var d Duration
	s = strings.TrimSpace(s)
	for s != "" {
		neg := false
		if s[0] == '-' {
			neg = true
			s = s[1:]
		}
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return Duration{}, fmt.Errorf("invalid duration: no number found")
		}
		num, err := strconv.Atoi(s[:i])
		if err != nil {
			return Duration{}, fmt.Errorf("invalid duration: %w", err)
		}
		if neg {
			num = -num
		}
		s = s[i:]
		if s == "" {
			return Duration{}, fmt.Errorf("invalid duration: no unit found after number %d", num)
		}
		switch s[0] {
		case 'y':
			d.Years = num
		case 'm':
			d.Months = num
		case 'd':
			d.Days = num
		case 'h':
			d.Hours = num
		default:
			return Duration{}, fmt.Errorf("invalid duration: invalid unit %q found after number %d", s[0], num)
		}
		s = s[1:]
	}
	return d, nil
}

// String writes d as ParseDuration reads it, leaving out zero units.
func (d Duration) String() string {
	var b strings.Builder
	for _, u := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if u.n != 0 {
			b.WriteString(strconv.Itoa(u.n))
			b.WriteString(u.unit)
		}
	}
	return b.String()
}

// Zero reports whether d is the empty duration.
func (d Duration) Zero() bool { return d == Duration{} }

// negative reports whether any unit is below zero.
func (d Duration) negative() bool {
	return d.Years < 0 || d.Months < 0 || d.Days < 0 || d.Hours < 0
}

// before returns the start of the window of length d that ends at t.
func (d Duration) before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

// ExpirePolicy says which snapshots of a group to keep. Counts are the
// number of periods to keep a snapshot for; 0 means the rule is off and -1
// means no limit. The zero value keeps nothing (see Empty).
type ExpirePolicy struct {
	Last    int // the newest N snapshots
	Hourly  int // the newest snapshot of each of the newest N hours that have one
	Daily   int
	Weekly  int // ISO 8601 weeks
	Monthly int
	Yearly  int

	Within        Duration // every snapshot within this duration of the newest
	WithinHourly  Duration // the newest snapshot of each hour within this duration of the newest
	WithinDaily   Duration
	WithinWeekly  Duration
	WithinMonthly Duration
	WithinYearly  Duration

	// Tags keeps every snapshot that has all tags of at least one list. A
	// list holding the empty tag matches snapshots without tags.
	Tags [][]string
}

// Empty reports whether no rule is set: such a policy would remove every
// snapshot.
func (p ExpirePolicy) Empty() bool {
	return len(p.Tags) == 0 && p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 &&
		p.Monthly == 0 && p.Yearly == 0 && p.Within.Zero() && p.WithinHourly.Zero() &&
		p.WithinDaily.Zero() && p.WithinWeekly.Zero() && p.WithinMonthly.Zero() && p.WithinYearly.Zero()
}

// Validate rejects counts below -1 and negative durations, with restic's
// wording.
func (p ExpirePolicy) Validate() error {
	for _, n := range []int{p.Last, p.Hourly, p.Daily, p.Weekly, p.Monthly, p.Yearly} {
		if n < -1 {
			return errors.New("negative values other than -1 are not allowed for --keep-*")
		}
	}
	for _, d := range []Duration{p.Within, p.WithinHourly, p.WithinDaily, p.WithinWeekly, p.WithinMonthly, p.WithinYearly} {
		if d.negative() {
			return errors.New("durations containing negative values are not allowed for --keep-within*")
		}
	}
	return nil
}

// tagListString formats one tag list as restic does: "[a, b]".
func tagListString(l []string) string { return "[" + strings.Join(l, ", ") + "]" }

// String describes the policy in restic's words, e.g. "keep 7 daily, 4
// weekly snapshots and all snapshots within 1m of the newest".
func (p ExpirePolicy) String() string {
	var counts, within []string
	for _, c := range []struct {
		n    int
		name string
	}{{p.Last, "latest"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}, {p.Monthly, "monthly"}, {p.Yearly, "yearly"}} {
		switch {
		case c.n > 0:
			counts = append(counts, fmt.Sprintf("%d %s", c.n, c.name))
		case c.n == -1:
			counts = append(counts, "all "+c.name)
		}
	}
	for _, w := range []struct {
		d    Duration
		name string
	}{{p.WithinHourly, "hourly"}, {p.WithinDaily, "daily"}, {p.WithinWeekly, "weekly"}, {p.WithinMonthly, "monthly"}, {p.WithinYearly, "yearly"}} {
		if !w.d.Zero() {
			within = append(within, fmt.Sprintf("%s snapshots within %s", w.name, w.d))
		}
	}
	var s string
	if len(counts) > 0 {
		s = strings.Join(counts, ", ") + " snapshots"
	}
	if len(within) > 0 {
		if s != "" {
			s += ", "
		}
		s += strings.Join(within, ", ")
	}
	if len(p.Tags) > 0 {
		if s != "" {
			s += " and "
		}
		lists := make([]string, len(p.Tags))
		for i, l := range p.Tags {
			lists[i] = tagListString(l)
		}
		s += "all snapshots with tags [" + strings.Join(lists, " ") + "]"
	}
	if !p.Within.Zero() {
		if s != "" {
			s += " and "
		}
		s += fmt.Sprintf("all snapshots within %s of the newest", p.Within)
	}
	if s == "" {
		return "remove"
	}
	return "keep " + s
}

// ParseTagList splits a comma-separated tag list as restic does for
// --keep-tag and --tag: around each tag white space is dropped, and empty
// entries stay (the empty tag matches snapshots without tags).
func ParseTagList(s string) []string {
	parts := strings.Split(s, ",")
	for i, t := range parts {
		parts[i] = strings.TrimSpace(t)
	}
	return parts
}

// hasTags reports whether sn has every tag of l. An empty tag in l matches
// when sn has no tags at all (the rest of l is then not looked at).
func hasTags(sn *Snapshot, l []string) bool {
	for _, t := range l {
		if t == "" && len(sn.Tags) == 0 {
			return true
		}
		if !sn.HasTag(t) {
			return false
		}
	}
	return true
}

// KeepCounters are the counts a policy had left after a kept snapshot was
// evaluated (-1 for unlimited rules).
type KeepCounters struct {
	Last    int `json:"last,omitempty"`
	Hourly  int `json:"hourly,omitempty"`
	Daily   int `json:"daily,omitempty"`
	Weekly  int `json:"weekly,omitempty"`
	Monthly int `json:"monthly,omitempty"`
	Yearly  int `json:"yearly,omitempty"`
}

// KeepReason says why a snapshot is kept: the rules it matched, in restic's
// words ("daily snapshot", "oldest monthly snapshot", "within 1m",
// "weekly within 1y", "has tags [a, b]", ...).
type KeepReason struct {
	Snapshot *Snapshot    `json:"snapshot"`
	Matches  []string     `json:"matches"`
	Counters KeepCounters `json:"counters"`
}

// period functions map a time to the bucket it falls into; nr is the
// snapshot's position (for keep-last every snapshot is its own bucket).
func periodHour(t time.Time, _ int) int {
	return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour()
}
func periodDay(t time.Time, _ int) int   { return t.Year()*10000 + int(t.Month())*100 + t.Day() }
func periodMonth(t time.Time, _ int) int { return t.Year()*100 + int(t.Month()) }
func periodYear(t time.Time, _ int) int  { return t.Year() }
func periodWeek(t time.Time, _ int) int {
	y, w := t.ISOWeek()
	return y*100 + w
}
func periodEach(_ time.Time, nr int) int { return nr }

// newestBefore returns the time of the newest snapshot that is not after
// now (strictly before it), or the zero time when there is none.
func newestBefore(list []*Snapshot, now time.Time) time.Time {
	var latest time.Time
	for _, sn := range list {
		if sn.Time.After(latest) && sn.Time.Before(now) {
			latest = sn.Time
		}
	}
	return latest
}

// SortNewestFirst sorts list by time, newest first; snapshots with the same
// time are ordered by ID, so the result does not depend on listing order.
func SortNewestFirst(list []*Snapshot) {
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Time.Equal(list[j].Time) {
			return list[i].Time.After(list[j].Time)
		}
		return bytes.Compare(list[i].ID[:], list[j].ID[:]) < 0
	})
}

// ApplyPolicy splits one group of snapshots into those p keeps and those it
// removes, both newest first; reasons has one entry per kept snapshot, in
// the same order. list itself is not reordered. Within-windows are measured
// from the newest snapshot that is not in the future (see ApplyPolicyAt).
func ApplyPolicy(list []*Snapshot, p ExpirePolicy) (keep, remove []*Snapshot, reasons []KeepReason) {
	return ApplyPolicyAt(list, p, time.Now())
}

// ApplyPolicyAt is ApplyPolicy with the current time given: snapshots after
// now do not count as the newest for the within-windows.
func ApplyPolicyAt(list []*Snapshot, p ExpirePolicy, now time.Time) (keep, remove []*Snapshot, reasons []KeepReason) {
	if len(list) == 0 {
		return nil, nil, nil
	}
	sorted := append([]*Snapshot(nil), list...)
	SortNewestFirst(sorted)

	type countRule struct {
		left   int // periods still to keep; -1 unlimited
		period func(time.Time, int) int
		last   int // bucket of the last kept snapshot
		reason string
	}
	counts := [6]countRule{
		{p.Last, periodEach, -1, "last snapshot"},
		{p.Hourly, periodHour, -1, "hourly snapshot"},
		{p.Daily, periodDay, -1, "daily snapshot"},
		{p.Weekly, periodWeek, -1, "weekly snapshot"},
		{p.Monthly, periodMonth, -1, "monthly snapshot"},
		{p.Yearly, periodYear, -1, "yearly snapshot"},
	}
	type windowRule struct {
		within Duration
		period func(time.Time, int) int
		last   int
		reason string
	}
	windows := [5]windowRule{
		{p.WithinHourly, periodHour, -1, "hourly within"},
		{p.WithinDaily, periodDay, -1, "daily within"},
		{p.WithinWeekly, periodWeek, -1, "weekly within"},
		{p.WithinMonthly, periodMonth, -1, "monthly within"},
		{p.WithinYearly, periodYear, -1, "yearly within"},
	}

	latest := newestBefore(sorted, now)
	oldest := len(sorted) - 1

	for nr, sn := range sorted {
		var matches []string

		for _, l := range p.Tags {
			if hasTags(sn, l) {
				matches = append(matches, "has tags "+tagListString(l))
			}
		}
		if !p.Within.Zero() && sn.Time.After(p.Within.before(latest)) {
			matches = append(matches, "within "+p.Within.String())
		}
		for i := range counts {
			c := &counts[i]
			if c.left == 0 || c.left < -1 {
				continue
			}
			b := c.period(sn.Time, nr)
			if b == c.last && nr != oldest {
				continue
			}
			// A new bucket, or the oldest snapshot while the rule still
			// has periods to keep: that keeps the longest history.
			reason := c.reason
			if b == c.last {
				reason = "oldest " + reason
			}
			c.last = b
			if c.left > 0 {
				c.left--
			}
			matches = append(matches, reason)
		}
		for i := range windows {
			w := &windows[i]
			if w.within.Zero() || !sn.Time.After(w.within.before(latest)) {
				continue
			}
			b := w.period(sn.Time, nr)
			if b == w.last && nr != oldest {
				continue
			}
			reason := w.reason
			if b == w.last {
				reason = "oldest " + reason
			}
			w.last = b
			matches = append(matches, reason+" "+w.within.String())
		}

		if len(matches) == 0 {
			remove = append(remove, sn)
			continue
		}
		keep = append(keep, sn)
		reasons = append(reasons, KeepReason{Snapshot: sn, Matches: matches, Counters: KeepCounters{
			Last: counts[0].left, Hourly: counts[1].left, Daily: counts[2].left,
			Weekly: counts[3].left, Monthly: counts[4].left, Yearly: counts[5].left,
		}})
	}
	return keep, remove, reasons
}

// GroupBy says which snapshot fields form a group's key.
type GroupBy struct {
	Host, Paths, Tags bool
}

// DefaultGroupBy is restic's default, "host,paths".
var DefaultGroupBy = GroupBy{Host: true, Paths: true}

// ParseGroupBy reads a comma-separated list of host, paths and tags (host,
// path and tag work too); "" means no grouping: one group of all snapshots.
func ParseGroupBy(s string) (GroupBy, error) {
	var g GroupBy
	for _, part := range strings.Split(s, ",") {
		switch part {
		case "host", "hosts":
			g.Host = true
		case "path", "paths":
			g.Paths = true
		case "tag", "tags":
			g.Tags = true
		case "":
		default:
			return GroupBy{}, fmt.Errorf("unknown grouping option: %q", part)
		}
	}
	return g, nil
}

// String writes g as ParseGroupBy reads it.
func (g GroupBy) String() string {
	var parts []string
	if g.Host {
		parts = append(parts, "host")
	}
	if g.Paths {
		parts = append(parts, "paths")
	}
	if g.Tags {
		parts = append(parts, "tags")
	}
	return strings.Join(parts, ",")
}

// SnapshotGroupKey identifies a group, shaped as restic's group key: fields
// not grouped by are empty (null in JSON); paths and tags are sorted.
type SnapshotGroupKey struct {
	Hostname string   `json:"hostname"`
	Paths    []string `json:"paths"`
	Tags     []string `json:"tags"`
}

// String describes the key as restic does: "host h, path [/a /b], tags [x]".
func (k SnapshotGroupKey) String() string {
	var parts []string
	if k.Hostname != "" {
		parts = append(parts, "host "+k.Hostname)
	}
	if len(k.Paths) != 0 {
		parts = append(parts, fmt.Sprintf("path %v", k.Paths))
	}
	if len(k.Tags) != 0 {
		parts = append(parts, fmt.Sprintf("tags %v", k.Tags))
	}
	return strings.Join(parts, ", ")
}

// SnapshotGroup is one group: its key and its snapshots, in the order they
// were given.
type SnapshotGroup struct {
	Key       SnapshotGroupKey
	Snapshots []*Snapshot
}

// sortedCopy returns a sorted copy of l; nil stays nil and an empty list
// stays empty (restic's keys tell the two apart).
func sortedCopy(l []string) []string {
	if l == nil {
		return nil
	}
	c := append(make([]string, 0, len(l)), l...)
	sort.Strings(c)
	return c
}

// GroupSnapshots splits list into groups by the fields groupBy names,
// ordered by key. The snapshots are not modified. Grouping by nothing gives
// one group with an empty key.
func GroupSnapshots(list []*Snapshot, groupBy GroupBy) ([]SnapshotGroup, error) {
	byKey := make(map[string]*SnapshotGroup)
	var keys []string
	for _, sn := range list {
		var k SnapshotGroupKey
		if groupBy.Host {
			k.Hostname = sn.Hostname
		}
		if groupBy.Paths {
			k.Paths = sortedCopy(sn.Paths)
		}
		if groupBy.Tags {
			k.Tags = sortedCopy(sn.Tags)
		}
		// The JSON form is the identity, as in restic: it tells a missing
		// list from an empty one.
		raw, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		g, ok := byKey[string(raw)]
		if !ok {
			g = &SnapshotGroup{Key: k}
			byKey[string(raw)] = g
			keys = append(keys, string(raw))
		}
		g.Snapshots = append(g.Snapshots, sn)
	}
	sort.Strings(keys)
	out := make([]SnapshotGroup, len(keys))
	for i, k := range keys {
		out[i] = *byKey[k]
	}
	return out, nil
}

// ForgetOptions is a whole forget run.
type ForgetOptions struct {
	// Filter selects the snapshots the policy looks at; the others are
	// left alone.
	Filter SnapshotFilter
	// GroupBy splits the selected snapshots into groups (restic's default
	// is DefaultGroupBy).
	GroupBy GroupBy
	Policy  ExpirePolicy
	// DryRun decides but removes nothing, and takes no lock.
	DryRun bool
	// UnsafeAllowRemoveAll lets an empty policy remove every snapshot the
	// filter selects; the filter must not be empty.
	UnsafeAllowRemoveAll bool
	// Now is the current time for the within-windows (zero: time.Now()).
	Now time.Time
}

// ForgetGroup is one group's decision.
type ForgetGroup struct {
	Key     SnapshotGroupKey
	Keep    []*Snapshot // newest first
	Remove  []*Snapshot // newest first
	Reasons []KeepReason
}

// ForgetResult is what a forget run decided and did.
type ForgetResult struct {
	Policy ExpirePolicy
	Groups []ForgetGroup
	// Remove lists every snapshot the policy removes, sorted by ID.
	Remove []ID
	// Removed lists the snapshot files actually deleted (none for a dry
	// run), sorted by ID.
	Removed []ID
	// Deferred are the snapshot files in Remove whose deletion the
	// storage refused (retention, bucket lock rules, no delete
	// permission): they stay, and a later forget removes them.
	Deferred Deferred
	DryRun   bool
}

// ForgetGroupError is returned when a policy would remove every snapshot of
// a group (possible only with --keep-tag alone); nothing is removed then.
type ForgetGroupError struct{ Key SnapshotGroupKey }

func (e *ForgetGroupError) Error() string {
	return fmt.Sprintf("refusing to delete last snapshot of snapshot group %q", e.Key.String())
}

// Forget applies policy to the snapshots filter selects, group by group,
// and unless dryRun removes the snapshot files of those it does not keep.
// Data stays until a prune.
func (r *Repository) Forget(ctx context.Context, filter SnapshotFilter, groupBy GroupBy, policy ExpirePolicy, dryRun bool) (*ForgetResult, error) {
	return r.ForgetWithOptions(ctx, ForgetOptions{Filter: filter, GroupBy: groupBy, Policy: policy, DryRun: dryRun})
}

// ForgetWithOptions is Forget with every option. Unless DryRun, the whole
// run (listing, deciding, removing) holds an exclusive lock, so no backup
// or other forget runs meanwhile. It refuses an empty policy (ErrNoPolicy)
// and a policy that keeps nothing of a group (ForgetGroupError) before
// removing anything. Paths, and tags when grouping by tags, of the returned
// snapshots are sorted, as restic prints them.
func (r *Repository) ForgetWithOptions(ctx context.Context, o ForgetOptions) (res *ForgetResult, err error) {
	if err := o.Policy.Validate(); err != nil {
		return nil, err
	}
	if o.Policy.Empty() {
		if !o.UnsafeAllowRemoveAll {
			return nil, ErrNoPolicy
		}
		if len(o.Filter.Hosts)+len(o.Filter.Tags)+len(o.Filter.Paths) == 0 {
			return nil, errors.New("--unsafe-allow-remove-all is not allowed unless a snapshot filter option is specified")
		}
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if !o.DryRun {
		// err is the named result: a lock left behind is reported.
		held, done, herr := r.Hold(ctx, true, "forget")
		if herr != nil {
			return nil, herr
		}
		defer func() {
			if uerr := done(); uerr != nil && err == nil {
				err = uerr
			}
		}()
		ctx = held
	}

	all, err := r.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var list []*Snapshot
	for _, sn := range all {
		if o.Filter.Matches(sn) {
			// restic sorts these in place while grouping; do the same on
			// our own copies so the output reads the same.
			sort.Strings(sn.Paths)
			if o.GroupBy.Tags {
				sort.Strings(sn.Tags)
			}
			list = append(list, sn)
		}
	}
	groups, err := GroupSnapshots(list, o.GroupBy)
	if err != nil {
		return nil, err
	}
	res = &ForgetResult{Policy: o.Policy, DryRun: o.DryRun}
	for _, g := range groups {
		keep, remove, reasons := ApplyPolicyAt(g.Snapshots, o.Policy, o.Now)
		if !o.Policy.Empty() && len(keep) == 0 {
			return nil, &ForgetGroupError{Key: g.Key}
		}
		res.Groups = append(res.Groups, ForgetGroup{Key: g.Key, Keep: keep, Remove: remove, Reasons: reasons})
		for _, sn := range remove {
			res.Remove = append(res.Remove, sn.ID)
		}
	}
	sortIDs(res.Remove)
	if o.DryRun || len(res.Remove) == 0 {
		return res, nil
	}
	res.Removed, err = r.removeSnapshotFiles(ctx, res.Remove, &res.Deferred)
	return res, err
}

// removeSnapshotFiles deletes snapshots/ID for every id, in parallel, and
// goes on after a failure; it returns the IDs it deleted (or found gone)
// and the failures. With deferred, a deletion the storage refuses is
// recorded there instead of being a failure.
func (r *Repository) removeSnapshotFiles(ctx context.Context, ids []ID, deferred *Deferred) ([]ID, error) {
	var (
		mu      sync.Mutex
		removed []ID
		errs    []error
	)
	_ = forEachParallel(ctx, ids, 8, func(ctx context.Context, id ID) error {
		h := backend.Handle{Type: backend.SnapshotFile, Name: id.String()}
		err := r.be.Remove(ctx, h)
		mu.Lock()
		defer mu.Unlock()
		if until, refused := backend.RefusedUntil(err); refused && deferred != nil {
			deferred.add(DeferredFile{Object: h.String(), Until: until})
			return nil
		}
		if err != nil && !errors.Is(err, backend.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove snapshots/%s: %w", id, err))
			return nil
		}
		removed = append(removed, id)
		return nil
	})
	sortIDs(removed)
	if deferred != nil {
		deferred.sort()
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// RemoveSnapshots deletes the snapshot files of ids under an exclusive lock,
// as `forget ID...` does, and returns the IDs deleted (or already gone),
// sorted. It goes on after a failure and reports every failure; a deletion
// the storage refuses is one (it wraps backend.ErrDeleteRefused).
func (r *Repository) RemoveSnapshots(ctx context.Context, ids []ID) (removed []ID, err error) {
	return r.RemoveSnapshotsDeferring(ctx, ids, nil)
}

// RemoveSnapshotsDeferring is RemoveSnapshots that records in deferred
// (when not nil) the deletions the storage refuses instead of failing:
// what forget does, since retention makes a forgotten snapshot stay until
// its lock ends.
func (r *Repository) RemoveSnapshotsDeferring(ctx context.Context, ids []ID, deferred *Deferred) (removed []ID, err error) {
	seen := make(map[ID]bool, len(ids))
	var uniq []ID
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	if len(uniq) == 0 {
		return nil, nil
	}
	held, done, err := r.Hold(ctx, true, "forget")
	if err != nil {
		return nil, err
	}
	defer func() {
		if uerr := done(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	return r.removeSnapshotFiles(held, uniq, deferred)
}
