package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

// keepCount is a --keep-* count: a number, or "unlimited" (restic 0.15+)
// or -1 (restic 0.14) for no limit.
type keepCount int

func (c *keepCount) Set(s string) error {
	if s == "unlimited" {
		*c = -1
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 0)
	if err != nil {
		return fmt.Errorf("not a count: %q (use a number or 'unlimited')", s)
	}
	if n < -1 {
		return errors.New("negative values not allowed, use 'unlimited' instead")
	}
	*c = keepCount(n)
	return nil
}

func (c *keepCount) String() string {
	if *c == -1 {
		return "unlimited"
	}
	return strconv.Itoa(int(*c))
}

func (c *keepCount) Type() string { return "n" }

// durationFlag is a --keep-within* duration such as 1y5m7d2h.
type durationFlag struct{ d *repo.Duration }

func (f durationFlag) Set(s string) error {
	d, err := repo.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (f durationFlag) String() string { return f.d.String() }
func (f durationFlag) Type() string   { return "duration" }

// tagListsFlag collects --keep-tag values, each a comma-separated list.
type tagListsFlag struct{ l *[][]string }

func (f tagListsFlag) Set(s string) error {
	*f.l = append(*f.l, repo.ParseTagList(s))
	return nil
}

func (f tagListsFlag) String() string {
	parts := make([]string, len(*f.l))
	for i, l := range *f.l {
		parts[i] = strings.Join(l, ",")
	}
	return strings.Join(parts, " ")
}

func (f tagListsFlag) Type() string { return "taglist" }

// forgetGroupJSON is one group of `forget --json`, restic's shape.
type forgetGroupJSON struct {
	Tags    []string         `json:"tags"`
	Host    string           `json:"host"`
	Paths   []string         `json:"paths"`
	Keep    []snapshotJSON   `json:"keep"`
	Remove  []snapshotJSON   `json:"remove"`
	Reasons []keepReasonJSON `json:"reasons"`
}

type keepReasonJSON struct {
	Snapshot snapshotJSON `json:"snapshot"`
	Matches  []string     `json:"matches"`
}

func asSnapshotsJSON(list []*repo.Snapshot) []snapshotJSON {
	var out []snapshotJSON // null when empty, as restic prints it
	for _, sn := range list {
		out = append(out, snapshotJSON{Snapshot: sn, ID: sn.ID.String(), ShortID: sn.ID.Str()})
	}
	return out
}

// forgetCommand is `forget`: restic's retention policy flags and selection.
func (a *app) forgetCommand() *cobra.Command {
	var (
		policy      repo.ExpirePolicy
		counts      [6]keepCount
		filter      repo.SnapshotFilter
		groupBy     string
		dryRun      bool
		maxUnused   string
		prune       bool
		compact     bool
		unsafeAllow bool
	)
	cmd := &cobra.Command{
		Use:   "forget [flags] [SNAPSHOT...]",
		Short: "Remove snapshots according to a retention policy",
		Long: `Remove snapshots according to a policy, choosing exactly the snapshots that
restic forget chooses with the same flags. Snapshots are first grouped by
--group-by (default host,paths); the --keep-* rules then apply to each group
on its own, newest snapshot first. A --keep-hourly/daily/weekly/monthly/yearly
rule keeps the newest snapshot of each of the last N hours, days, ISO weeks,
months or years that have a snapshot; 'unlimited' (or -1) keeps one of every
such period. If a group has fewer such periods than a rule asks for, its
oldest snapshot is kept too. Periods are read in the time zone each snapshot
was taken in. --keep-within* durations (like 1y5m7d2h) count back from the
group's newest snapshot, not from now.

With snapshot IDs as arguments, those snapshots are removed and no policy
applies. Only the snapshot files are removed; run prune to free the data.`,
		Example: `  scalr-backup forget --keep-daily 30 --keep-weekly 4 --keep-monthly 6
  scalr-backup forget --tag scalr-app-db --keep-last 10 --dry-run
  scalr-backup forget --keep-within 1y5m7d2h --keep-yearly unlimited --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("host") {
				if h := a.getenv("RESTIC_HOST"); h != "" {
					filter.Hosts = []string{h}
				}
			}
			policy.Last, policy.Hourly, policy.Daily = int(counts[0]), int(counts[1]), int(counts[2])
			policy.Weekly, policy.Monthly, policy.Yearly = int(counts[3]), int(counts[4]), int(counts[5])
			gb, err := repo.ParseGroupBy(groupBy)
			if err != nil {
				return err
			}
			if err := policy.Validate(); err != nil {
				return err
			}
			if prune {
				if err := repo.ValidateMaxUnused(maxUnused); err != nil {
					return fmt.Errorf("--max-unused: %w", err)
				}
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			if len(args) > 0 {
				return a.forgetIDs(cmd, r, args, filter, dryRun)
			}
			res, err := r.ForgetWithOptions(ctx, repo.ForgetOptions{
				Filter: filter, GroupBy: gb, Policy: policy, DryRun: dryRun, UnsafeAllowRemoveAll: unsafeAllow,
			})
			if res != nil {
				if perr := a.printForget(res, compact); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil || !prune || res == nil || len(res.Remove) == 0 {
				return err
			}
			// As restic: prune only when snapshots were removed; a dry
			// run runs a dry prune.
			return a.prune(ctx, r, repo.PruneOptions{DryRun: dryRun, MaxUnused: maxUnused})
		},
	}
	f := cmd.Flags()
	for i, k := range []struct{ name, short, period string }{
		{"keep-last", "l", ""}, {"keep-hourly", "H", "hourly "}, {"keep-daily", "d", "daily "},
		{"keep-weekly", "w", "weekly "}, {"keep-monthly", "m", "monthly "}, {"keep-yearly", "y", "yearly "},
	} {
		f.VarP(&counts[i], k.name, k.short, fmt.Sprintf("keep the last `n` %ssnapshots ('unlimited' or -1: all of them)", k.period))
	}
	for _, k := range []struct {
		name string
		d    *repo.Duration
		what string
	}{
		{"keep-within", &policy.Within, "snapshots"}, {"keep-within-hourly", &policy.WithinHourly, "hourly snapshots"},
		{"keep-within-daily", &policy.WithinDaily, "daily snapshots"}, {"keep-within-weekly", &policy.WithinWeekly, "weekly snapshots"},
		{"keep-within-monthly", &policy.WithinMonthly, "monthly snapshots"}, {"keep-within-yearly", &policy.WithinYearly, "yearly snapshots"},
	} {
		f.Var(durationFlag{k.d}, k.name, fmt.Sprintf("keep %s newer than `duration` (e.g. 1y5m7d2h) before the newest snapshot", k.what))
	}
	f.Var(tagListsFlag{&policy.Tags}, "keep-tag", "keep snapshots with all of these `tags` (a,b; repeatable for either)")
	f.BoolVar(&unsafeAllow, "unsafe-allow-remove-all", false, "with no --keep-* rule, remove every snapshot the --host/--tag/--path filter selects")
	// No -H for --host here: it is --keep-hourly's, as in restic.
	f.StringArrayVar(&filter.Hosts, "host", nil, "only consider snapshots of this `host` (repeatable; default: $RESTIC_HOST)")
	f.StringArrayVar(&filter.Tags, "tag", nil, "only consider snapshots with these `tags` (a,b = both; repeat for either)")
	f.StringArrayVar(&filter.Paths, "path", nil, "only consider snapshots that include this `path` (repeatable: all of them)")
	f.BoolVarP(&compact, "compact", "c", false, "print shorter tables")
	f.StringVarP(&groupBy, "group-by", "g", "host,paths", "`group` snapshots by host, paths and/or tags, separated by commas ('' for one group)")
	f.BoolVarP(&dryRun, "dry-run", "n", false, "only show what would be removed")
	f.BoolVar(&prune, "prune", false, "run prune when snapshots were removed")
	f.StringVar(&maxUnused, "max-unused", "5%", "with --prune: tolerated unused space (percentage, size like 500M, or 'unlimited')")
	f.SortFlags = false
	return cmd
}

// forgetIDs removes the snapshots named on the command line, as restic does:
// a name that does not resolve is reported and skipped; "latest" honours
// the filter, plain IDs do not.
func (a *app) forgetIDs(cmd *cobra.Command, r *repo.Repository, args []string, filter repo.SnapshotFilter, dryRun bool) error {
	ctx := cmd.Context()
	var ids []repo.ID
	usedFilter := false
	for _, ref := range args {
		f := repo.SnapshotFilter{}
		if ref == "latest" {
			f, usedFilter = filter, true
		}
		sn, err := r.FindSnapshot(ctx, ref, f)
		if err != nil {
			// A damaged snapshot file named by its ID is removed as asked
			// (restic cannot: it must read a snapshot to forget it).
			var ce *repo.CorruptError
			if ref != "latest" && errors.As(err, &ce) {
				if id, ferr := r.FindFile(ctx, backend.SnapshotFile, strings.ToLower(ref)); ferr == nil {
					fmt.Fprintf(a.stderr, "%v; removing the file as asked\n", err)
					ids = append(ids, id)
					continue
				}
			}
			fmt.Fprintf(a.stderr, "Ignoring %q: %v\n", ref, err)
			continue
		}
		ids = append(ids, sn.ID)
	}
	if !usedFilter && len(filter.Hosts)+len(filter.Tags)+len(filter.Paths) > 0 {
		fmt.Fprintln(a.stderr, `Ignoring "filters": explicit snapshot ids are given`)
	}
	if len(ids) == 0 {
		return nil
	}
	if dryRun {
		if !a.quiet && !a.jsonOutput {
			fmt.Fprintf(a.stdout, "Would have removed the following snapshots:\n%s\n\n", idSetString(ids))
		}
		return nil
	}
	var deferred repo.Deferred
	removed, err := r.RemoveSnapshotsDeferring(ctx, ids, &deferred)
	if !a.quiet && !a.jsonOutput {
		fmt.Fprintf(a.stdout, "removed %d snapshots\n", len(removed))
	}
	a.printDeferred(&deferred, "forget")
	if a.jsonOutput && deferred.Files > 0 {
		if jerr := a.emitJSON(forgetDeferredJSON{MessageType: "forget_deferred", Deferred: &deferred}); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

// idSetString prints short IDs like restic's ID sets: {a b c}, sorted,
// without repeats.
func idSetString(ids []repo.ID) string {
	seen := map[repo.ID]bool{}
	var s []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			s = append(s, id.Str())
		}
	}
	sort.Strings(s)
	return "{" + strings.Join(s, " ") + "}"
}

func (a *app) printForget(res *repo.ForgetResult, compact bool) error {
	if a.jsonOutput {
		if len(res.Groups) == 0 {
			return nil // restic prints nothing then
		}
		out := make([]forgetGroupJSON, len(res.Groups))
		for i, g := range res.Groups {
			j := forgetGroupJSON{Tags: g.Key.Tags, Host: g.Key.Hostname, Paths: g.Key.Paths,
				Keep: asSnapshotsJSON(g.Keep), Remove: asSnapshotsJSON(g.Remove)}
			for _, kr := range g.Reasons {
				j.Reasons = append(j.Reasons, keepReasonJSON{
					Snapshot: snapshotJSON{Snapshot: kr.Snapshot, ID: kr.Snapshot.ID.String(), ShortID: kr.Snapshot.ID.Str()},
					Matches:  kr.Matches,
				})
			}
			out[i] = j
		}
		if err := json.NewEncoder(a.stdout).Encode(out); err != nil {
			return err
		}
		if res.Deferred.Files > 0 {
			// A line of its own: the array above is restic's shape.
			return a.emitJSON(forgetDeferredJSON{MessageType: "forget_deferred", Deferred: &res.Deferred})
		}
		return nil
	}
	if a.quiet {
		return nil
	}
	w := a.stdout
	fmt.Fprintf(w, "Applying Policy: %s\n", res.Policy)
	for _, g := range res.Groups {
		if h := groupHeader(g.Key); h != "" {
			fmt.Fprintln(w, h)
		}
		if len(g.Keep) > 0 {
			fmt.Fprintf(w, "keep %d snapshots:\n", len(g.Keep))
			printSnapshotTable(w, g.Keep, g.Reasons, compact)
			fmt.Fprintln(w)
		}
		if len(g.Remove) > 0 {
			fmt.Fprintf(w, "remove %d snapshots:\n", len(g.Remove))
			printSnapshotTable(w, g.Remove, nil, compact)
			fmt.Fprintln(w)
		}
	}
	switch {
	case len(res.Remove) == 0:
	case res.DryRun:
		fmt.Fprintf(w, "Would have removed the following snapshots:\n%s\n\n", idSetString(res.Remove))
	default:
		fmt.Fprintf(w, "removed %d snapshots\n", len(res.Removed))
	}
	a.printDeferred(&res.Deferred, "forget")
	return nil
}

// forgetDeferredJSON is the line forget --json adds after restic's array
// when the storage refused to delete snapshot files.
type forgetDeferredJSON struct {
	MessageType string         `json:"message_type"` // "forget_deferred"
	Deferred    *repo.Deferred `json:"deferred"`
}

// groupHeader names a group as restic's verbose output does; "" when
// nothing is grouped.
func groupHeader(k repo.SnapshotGroupKey) string {
	var parts []string
	if k.Hostname != "" {
		parts = append(parts, "host ["+k.Hostname+"]")
	}
	if k.Tags != nil {
		parts = append(parts, "tags ["+strings.Join(k.Tags, ", ")+"]")
	}
	if k.Paths != nil {
		parts = append(parts, "paths ["+strings.Join(k.Paths, ", ")+"]")
	}
	if len(parts) == 0 {
		return ""
	}
	return "snapshots for (" + strings.Join(parts, ", ") + "):"
}

// printSnapshotTable prints list oldest first as a table with a reasons
// column when reasons (parallel to list) are given.
func printSnapshotTable(w io.Writer, list []*repo.Snapshot, reasons []repo.KeepReason, compact bool) {
	why := map[*repo.Snapshot][]string{}
	for _, kr := range reasons {
		why[kr.Snapshot] = kr.Matches
	}
	sorted := append([]*repo.Snapshot(nil), list...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.Before(sorted[j].Time) })
	hasSize := false
	for _, sn := range sorted {
		hasSize = hasSize || sn.Summary != nil
	}

	header := []string{"ID", "Time", "Host      ", "Tags      "}
	tagSep := ","
	if compact {
		header[2], header[3], tagSep = "Host", "Tags  ", "\n"
	}
	withReasons := len(reasons) > 0 && !compact
	if withReasons {
		header = append(header, "Reasons")
	}
	if !compact {
		header = append(header, "Paths")
	}
	if hasSize {
		header = append(header, "Size")
	}
	var rows [][]string
	multiline := false
	for _, sn := range sorted {
		row := []string{sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"), sn.Hostname, strings.Join(sn.Tags, tagSep)}
		if withReasons {
			row = append(row, strings.Join(why[sn], "\n"))
		}
		if !compact {
			row = append(row, strings.Join(sn.Paths, "\n"))
			multiline = multiline || len(sn.Paths) > 1
		}
		if hasSize {
			size := ""
			if sn.Summary != nil {
				size = bytesHuman(sn.Summary.TotalBytesProcessed)
			}
			row = append(row, size)
		}
		rows = append(rows, row)
	}

	writeTable(w, header, rows, multiline)
	fmt.Fprintf(w, "%d snapshots\n", len(sorted))
}

// writeTable writes rows under header as restic's tables look: columns
// two spaces apart, a rule under the header and at the end, cells of
// several lines (separated by "\n") spread over lines, and a blank line
// between rows when blankBetween.
func writeTable(w io.Writer, header []string, rows [][]string, blankBetween bool) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, row := range rows {
		for i, cell := range row {
			for _, line := range strings.Split(cell, "\n") {
				widths[i] = max(widths[i], len(line))
			}
		}
	}
	total := 2 * (len(widths) - 1)
	for _, wd := range widths {
		total += wd
	}
	rule := strings.Repeat("-", total)
	line := func(cells []string) string {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			fmt.Fprintf(&b, "%-*s", widths[i], c)
		}
		return strings.TrimRight(b.String(), " ")
	}
	fmt.Fprintln(w, line(header))
	fmt.Fprintln(w, rule)
	for n, row := range rows {
		if blankBetween && n > 0 {
			fmt.Fprintln(w)
		}
		lines := 1
		split := make([][]string, len(row))
		for i, cell := range row {
			split[i] = strings.Split(cell, "\n")
			lines = max(lines, len(split[i]))
		}
		for l := 0; l < lines; l++ {
			cells := make([]string, len(row))
			for i := range row {
				if l < len(split[i]) {
					cells[i] = split[i][l]
				}
			}
			fmt.Fprintln(w, line(cells))
		}
	}
	fmt.Fprintln(w, rule)
}
