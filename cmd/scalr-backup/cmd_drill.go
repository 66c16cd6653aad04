package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/pgstream"
)

func (a *app) drillCommand() *cobra.Command {
	var (
		df           discoverFlags
		snapshot     string
		image        string
		noRecord     bool
		readyTimeout time.Duration
		host         string
	)
	cmd := &cobra.Command{
		Use:   "drill [CONTAINER...]",
		Short: "Prove the latest backups restore, in throwaway containers",
		Long: `For each container named (default: the discovered ones, see discover), restore
its latest backup into a throwaway container (scalr-drill-CONTAINER-XXXXXXXX,
--network none) started as the live container was: the same image,
entrypoint, command, user and environment, with the files its *_FILE
variables and *_file settings name mounted read-only from the same mounts
(never its data directory). Once its final server accepts connections,
crash safety is switched off through the server (ALTER SYSTEM); a stopped
container or a permanent error (authentication, a missing role) ends the
wait at once, and the error shows the last lines of the container's log.
The drill checks every table's row count against the snapshot's manifest,
records every table's checksum, and removes the throwaway container, also
when the drill fails.

Prints a pass/fail line per table and exits non-zero when any count differs
(naming the table) or any drill could not run. Each outcome is saved as
/drill/CONTAINER.json in a snapshot of its own, tagged drill,
drill-of:CONTAINER and drill-passed or drill-failed, so a monitor can find
the last successful drill:

  scalr-backup snapshots --tag drill,drill-of:scalr-app-db,drill-passed

Drill records never carry the container's own tag, so "dump --tag CONTAINER
latest" (ours or restic's) still finds the newest backup after a drill.
Records written by earlier versions were tagged with the container's name
instead of drill-of:CONTAINER; the nightly pass reads both. The nightly
forget keeps the newest SCALR_BACKUP_DRILL_KEEP (12) records per container
and host.

The drill runs as one host (--host, else SCALR_BACKUP_HOST, else RESTIC_HOST,
else this host's name), the same one backup, pg-backup, run and daemon
record: its name is recorded in the drill records.`,
		Example: `  scalr-backup drill
  scalr-backup drill scalr-app-db --snapshot 1a2b3c4d`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if snapshot != "latest" && len(args) != 1 {
				return fmt.Errorf("--snapshot %s names one backup: give exactly one CONTAINER", snapshot)
			}
			host, err := a.hostIdentity(host)
			if err != nil {
				return err
			}
			dopts, err := a.discoveryOptions(&df)
			if err != nil {
				return err
			}
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			names := args
			if len(names) == 0 {
				targets, err := pgstream.Discover(ctx, d, dopts)
				if err != nil {
					return err
				}
				if len(targets) == 0 {
					a.warnf("no running Postgres container matches (%s): nothing to drill", describeSelection(dopts))
					if a.jsonOutput {
						return json.NewEncoder(a.stdout).Encode([]*pgstream.DrillResult{})
					}
					return nil
				}
				for _, t := range targets {
					names = append(names, t.Container)
				}
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			var results []*pgstream.DrillResult
			var failures []string
			for _, name := range names {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !a.quiet && !a.jsonOutput {
					fmt.Fprintf(a.stderr, "drill of %s...\n", name)
				}
				res, err := pgstream.Drill(ctx, d, r, name, pgstream.DrillOptions{
					Snapshot: snapshot, Image: image, ReadyTimeout: readyTimeout, NoRecord: noRecord,
					Hostname: host, ProgramVersion: "scalr-backup " + version(),
					Warn: func(s string) { a.warnf("%s", s) },
				})
				if err != nil {
					failures = append(failures, err.Error())
				}
				if res.RecordErr != nil && err == nil {
					failures = append(failures, fmt.Sprintf("%s: saving the drill record: %v", name, res.RecordErr))
				}
				if a.verbose {
					for _, w := range res.Warnings {
						a.warnf("%s: %s", name, w)
					}
				}
				results = append(results, res)
			}
			if a.jsonOutput {
				if err := json.NewEncoder(a.stdout).Encode(results); err != nil {
					return err
				}
			} else if !a.quiet {
				a.printDrill(results)
			}
			if len(failures) > 0 {
				return fmt.Errorf("%d of %d drills failed:\n  %s", len(failures), len(results), strings.Join(failures, "\n  "))
			}
			return nil
		},
	}
	df.add(cmd)
	f := cmd.Flags()
	f.StringVar(&snapshot, "snapshot", "latest", "the backup to restore: latest or a snapshot `ID` (with one CONTAINER)")
	f.StringVar(&image, "image", "", "start the throwaway container from this `image`, with its own entrypoint and command (default: the container's own image, entrypoint and command)")
	f.BoolVar(&noRecord, "no-record", false, "do not save the drill's outcome as a snapshot")
	f.DurationVar(&readyTimeout, "ready-timeout", 3*time.Minute, "how long to wait for the throwaway Postgres to start")
	f.StringVarP(&host, "host", "H", "", "`hostname` the drill runs as: its backups are restored and its records saved under it (default: $SCALR_BACKUP_HOST, else $RESTIC_HOST, else this host's name)")
	return cmd
}

func (a *app) printDrill(results []*pgstream.DrillResult) {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tSNAPSHOT\tDATABASE\tTABLE\tMANIFEST\tRESTORED\tRESULT")
	for _, res := range results {
		sn := res.Snapshot
		if len(sn) > 8 {
			sn = sn[:8]
		}
		if sn == "" {
			sn = "-"
		}
		tables := 0
		for _, db := range res.Databases {
			for _, t := range db.Tables {
				tables++
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.Container, sn, db.Name,
					(pgstream.TableCount{Schema: t.Schema, Name: t.Name}).QualifiedName(), count(t.Expected), count(t.Restored), passFail(t.OK))
			}
		}
		if tables == 0 || res.Error != "" {
			result := "pass"
			if !res.Passed {
				result = "FAIL"
			}
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", res.Container, sn, result)
		}
	}
	tw.Flush()
	for _, res := range results {
		status := "PASSED"
		if !res.Passed {
			status = "FAILED"
		}
		fmt.Fprintf(a.stdout, "drill of %s: %s in %.1fs", res.Container, status, res.DurationSeconds)
		if !res.RecordID.IsNull() {
			fmt.Fprintf(a.stdout, ", recorded in snapshot %s", res.RecordID.Str())
		}
		fmt.Fprintln(a.stdout)
	}
}
