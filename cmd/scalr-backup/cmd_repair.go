package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) repairCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Repair a damaged repository",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(a.repairIndexCommand())
	return cmd
}

func (a *app) repairIndexCommand() *cobra.Command {
	var readAll bool
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the packs",
		Long: `Rebuild the repository's index from the packs, as restic repair index does:
under an exclusive lock, every stored pack is described by new index files
(taken from the old index where it is readable and agrees with the pack's
size, else read from the pack's own header), and only then are the old index
files deleted. A crash in between leaves both, which is harmless. Run it when
check reports index files that cannot be read, or packs no index names while
snapshots need their data (index files lost). Missing and damaged packs are
left out and listed; check then names the snapshots that need them.`,
		Example: `  scalr-backup repair index
  scalr-backup repair index --read-all-packs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			rep, err := r.RepairIndex(ctx, repo.RepairIndexOptions{ReadAllPacks: readAll, Progress: func(s string) {
				if !a.quiet && !a.jsonOutput {
					fmt.Fprintln(a.stderr, s)
				}
			}})
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return json.NewEncoder(a.stdout).Encode(rep)
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "index rebuilt: %d packs in %d new index files (%d pack headers read), %d old index files removed\n",
					rep.Packs, len(rep.IndexWritten), rep.PacksRead, len(rep.IndexRemoved))
			}
			a.printDeferred(&rep.Deferred, "repair index")
			for _, id := range rep.MissingPacks {
				a.warnf("pack %s was in the old index but is not stored: left out", id)
			}
			for _, id := range rep.UnreadablePacks {
				a.warnf("pack %s is damaged (its header cannot be read): left out; run check to see which snapshots need it", id)
			}
			for _, id := range rep.UnreadableIndex {
				a.warnf("old index file %s could not be read: replaced", id)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readAll, "read-all-packs", false, "read every pack's header, not only those the old index does not describe")
	return cmd
}
