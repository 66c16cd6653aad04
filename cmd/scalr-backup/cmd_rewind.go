package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/s3"
)

// rewindCommand is `rewind --to TIME`: undo deletions and overwrites on a
// versioned bucket from its raw object versions.
func (a *app) rewindCommand() *cobra.Command {
	var (
		to          string
		dryRun      bool
		removeNewer bool
	)
	cmd := &cobra.Command{
		Use:   "rewind --to TIME",
		Short: "Bring every object of an S3 repository back to how it was at a time",
		Long: `Bring every object of the repository (locks excepted) back to its newest
version at or before TIME, on a versioned bucket (Object Lock turns
versioning on): deletions are undone by removing the delete markers above
that version, overwrites (a replaced config, for example) by copying that
version on top. It works from the bucket's object versions alone, so it
succeeds when the repository no longer opens, and needs no password. No
version that holds data is ever deleted.

Objects created after TIME are listed and left alone unless
--remove-newer is given; they are then hidden behind a delete marker (their
versions stay). Run with --dry-run first: it prints the same list and
changes nothing. Then check the repository.`,
		Example: `  scalr-backup rewind --to 2026-11-26T03:00:00Z --dry-run
  scalr-backup rewind --to "2026-11-26 03:00" --remove-newer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			when, err := parseRewindTime(to, time.Now())
			if err != nil {
				return err
			}
			be, err := a.openBackend(ctx, false)
			if err != nil {
				return err
			}
			defer be.Close()
			sb := s3Backend(be)
			if sb == nil {
				return fmt.Errorf("rewind works on S3 repositories with bucket versioning; %s is not one", be.Location())
			}
			o := s3.RewindOptions{To: when, DryRun: dryRun, RemoveNewer: removeNewer}
			if !a.jsonOutput && !a.quiet {
				o.Report = func(ch s3.RewindChange) { fmt.Fprintln(a.stdout, rewindLine(ch, dryRun)) }
			}
			res, err := sb.Rewind(ctx, o)
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return a.emitJSON(res)
			}
			if !a.quiet {
				fmt.Fprintln(a.stdout, rewindSummary(res))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the `time` to go back to: RFC 3339 (2026-11-26T03:00:00Z), or \"YYYY-MM-DD HH:MM[:SS]\" in local time")
	f.BoolVarP(&dryRun, "dry-run", "n", false, "print what would change, change nothing")
	f.BoolVar(&removeNewer, "remove-newer", false, "hide objects created after the time behind a delete marker")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// parseRewindTime reads --to; a time in the future is refused (there is
// nothing to go forward to, and it is most likely a typo).
func parseRewindTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	var t time.Time
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if layout == time.RFC3339Nano {
			t, err = time.Parse(layout, s)
		} else {
			t, err = time.ParseInLocation(layout, s, time.Local)
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("--to %q: want a time like 2026-11-26T03:00:00Z or \"2026-11-26 03:00\"", s)
	}
	if t.After(now) {
		return time.Time{}, fmt.Errorf("--to %s is in the future", t.Format(time.RFC3339))
	}
	return t, nil
}

// s3Backend finds the S3 backend below the decorators.
func s3Backend(be backend.Backend) *s3.Backend {
	for be != nil {
		if sb, ok := be.(*s3.Backend); ok {
			return sb
		}
		u, ok := be.(interface{ Unwrap() backend.Backend })
		if !ok {
			return nil
		}
		be = u.Unwrap()
	}
	return nil
}

func rewindLine(ch s3.RewindChange, dryRun bool) string {
	verb := map[string]string{
		s3.RewindUndelete:  "undelete",
		s3.RewindRestore:   "restore",
		s3.RewindRemove:    "remove",
		s3.RewindKeepNewer: "keep (created after the time; --remove-newer removes it)",
	}[ch.Action]
	if dryRun && ch.Action != s3.RewindKeepNewer {
		verb = "would " + verb
	}
	s := verb + " " + ch.Key
	if ch.Version != "" {
		s += fmt.Sprintf(" (version %s of %s)", ch.Version, ch.Time.UTC().Format(time.RFC3339))
	}
	return s
}

func rewindSummary(res *s3.RewindResult) string {
	n := map[string]int{}
	for _, ch := range res.Changes {
		n[ch.Action]++
	}
	s := fmt.Sprintf("%d objects: %d as at %s, %d undeleted, %d restored, %d removed, %d newer kept",
		res.Keys, res.Unchanged, res.To.UTC().Format(time.RFC3339), n[s3.RewindUndelete], n[s3.RewindRestore], n[s3.RewindRemove], n[s3.RewindKeepNewer])
	if res.DryRun {
		s += " (dry run: nothing was changed)"
	}
	return s
}
