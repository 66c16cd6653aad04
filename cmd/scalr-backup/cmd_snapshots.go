package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

// snapshotJSON is one entry of `snapshots --json`, shaped like restic's:
// the snapshot's own fields plus id and short_id.
type snapshotJSON struct {
	*repo.Snapshot
	ID      string `json:"id"`
	ShortID string `json:"short_id"`
}

func addFilterFlags(cmd *cobra.Command, f *repo.SnapshotFilter) {
	cmd.Flags().StringArrayVarP(&f.Hosts, "host", "H", nil, "only snapshots of this `host` (repeatable)")
	cmd.Flags().StringArrayVar(&f.Tags, "tag", nil, "only snapshots with these `tags` (a,b = both; repeat for either)")
	cmd.Flags().StringArrayVar(&f.Paths, "path", nil, "only snapshots that include this `path` (repeatable)")
}

func (a *app) snapshotsCommand() *cobra.Command {
	var filter repo.SnapshotFilter
	cmd := &cobra.Command{
		Use:   "snapshots [ID...]",
		Short: "List snapshots",
		Example: `  scalr-backup snapshots --tag scalr-app-db                 # the container's backups
  scalr-backup snapshots --tag drill,drill-of:scalr-app-db  # its drill records
  scalr-backup snapshots --json | jq -r '.[].short_id'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			var list []*repo.Snapshot
			if len(args) > 0 {
				for _, ref := range args {
					sn, err := r.FindSnapshot(ctx, ref, filter)
					if err != nil {
						return err
					}
					list = append(list, sn)
				}
			} else {
				all, err := r.ListSnapshots(ctx)
				if err != nil {
					return err
				}
				for _, sn := range all {
					if filter.Matches(sn) {
						list = append(list, sn)
					}
				}
			}
			if a.jsonOutput {
				out := make([]snapshotJSON, len(list))
				for i, sn := range list {
					out[i] = snapshotJSON{Snapshot: sn, ID: sn.ID.String(), ShortID: sn.ID.Str()}
				}
				return json.NewEncoder(a.stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTime\tHost\tTags\tPaths\tSize")
			for _, sn := range list {
				size := ""
				if sn.Summary != nil {
					size = bytesHuman(sn.Summary.TotalBytesProcessed)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"),
					sn.Hostname, strings.Join(sn.Tags, ","), strings.Join(sn.Paths, ","), size)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "%d snapshots\n", len(list))
			}
			return nil
		},
	}
	addFilterFlags(cmd, &filter)
	return cmd
}
