package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) pruneCommand() *cobra.Command {
	var opts repo.PruneOptions
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove data that no snapshot needs",
		Long: `Remove packs no snapshot needs and rewrite packs with too much unused space,
under an exclusive lock. A new index is written before anything is deleted,
so an interrupted prune never loses a snapshot.`,
		Example: `  scalr-backup prune
  scalr-backup prune --max-unused 0% --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := repo.ValidateMaxUnused(opts.MaxUnused); err != nil {
				return fmt.Errorf("--max-unused: %w", err)
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			return a.prune(ctx, r, opts)
		},
	}
	cmd.Flags().StringVar(&opts.MaxUnused, "max-unused", "5%", "tolerated unused space: a percentage, a size like 500M, or 'unlimited'")
	cmd.Flags().BoolVarP(&opts.DryRun, "dry-run", "n", false, "only show what would be done")
	return cmd
}

// prune runs a prune and prints its statistics; forget --prune uses it too.
func (a *app) prune(ctx context.Context, r *repo.Repository, opts repo.PruneOptions) error {
	if !a.quiet && !a.jsonOutput {
		opts.Progress = func(msg string) { fmt.Fprintln(a.stderr, msg) }
	}
	st, err := r.Prune(ctx, opts)
	if err != nil {
		return err
	}
	if a.jsonOutput {
		return a.emitJSON(st)
	}
	if a.quiet {
		return nil
	}
	fmt.Fprintf(a.stdout, "used:         %10d blobs / %s\n", st.UsedBlobs, bytesHuman(st.UsedSize))
	fmt.Fprintf(a.stdout, "duplicates:   %10d blobs / %s\n", st.DuplicateBlobs, bytesHuman(st.DuplicateSize))
	fmt.Fprintf(a.stdout, "unused:       %10d blobs / %s\n", st.UnusedBlobs, bytesHuman(st.UnusedSize))
	fmt.Fprintf(a.stdout, "to repack:    %10d blobs / %s (%d packs)\n", st.RepackBlobs, bytesHuman(st.RepackSize), st.PacksRepack)
	fmt.Fprintf(a.stdout, "to delete:    %10d blobs / %s (%d packs, %d unreferenced packs / %s)\n", st.RemoveBlobs, bytesHuman(st.RemoveSize), st.PacksRemove, st.PacksUnreferenced, bytesHuman(st.UnreferencedSize))
	fmt.Fprintf(a.stdout, "remaining:    %s, of which unused %s (limit %s)\n", bytesHuman(st.RemainingSize), bytesHuman(st.RemainingUnusedSize), bytesHuman(st.MaxUnusedBytesAllowed))
	a.printPruneRepairs(st, opts)
	if opts.DryRun {
		fmt.Fprintln(a.stdout, "dry run: nothing was changed")
	} else {
		fmt.Fprintf(a.stdout, "replaced %d index files, removed %d packs\n", st.IndexFilesReplaced, st.PacksDeleted)
	}
	a.printDeferred(&st.Deferred, "prune")
	return nil
}

// printDeferred says what the storage refused to delete, and until when,
// in the text output (--json carries the same under "deferred"). A
// deferral is not an error: the files stay and a later run retries.
func (a *app) printDeferred(d *repo.Deferred, what string) {
	if a.quiet || a.jsonOutput || d.Files == 0 {
		return
	}
	fmt.Fprintf(a.stdout, "%s: %s\n", what, d)
	for _, f := range d.List {
		until := "end unknown"
		if !f.Until.IsZero() {
			until = "until " + f.Until.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(a.stdout, "  deferred %s (%s)\n", f.Object, until)
	}
}

func (a *app) unlockCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "unlock",
		Short: "Remove stale locks",
		Long: `Remove locks whose holder is gone: older than 30 minutes, or created on this
host by a process that no longer runs. --remove-all removes every lock,
including those of running processes and unreadable lock files.`,
		Example: `  scalr-backup unlock
  scalr-backup unlock --remove-all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			n, err := r.RemoveStaleLocks(ctx, all)
			if err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "removed %d locks\n", n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "remove-all", false, "remove all locks, even those of running processes")
	return cmd
}
