package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/scalr-platform/scalr-backup/pgstream"
)

func isTerminalFd(fd uintptr) bool { return term.IsTerminal(int(fd)) }

// restoreJSON is restore's --json output.
type restoreJSON struct {
	Container string          `json:"container"`
	Target    string          `json:"target"`
	Snapshot  string          `json:"snapshot"`
	Databases []restoreDBJSON `json:"databases"`
	Warnings  []string        `json:"warnings,omitempty"`
	Seconds   float64         `json:"duration_seconds"`
	OK        bool            `json:"ok"`
	Error     string          `json:"error,omitempty"`
}

type restoreDBJSON struct {
	Name   string                `json:"name"`
	Tables []pgstream.DrillTable `json:"tables"`
}

func (a *app) restoreCommand() *cobra.Command {
	var (
		yes       bool
		databases []string
		globals   bool
		into      string
	)
	cmd := &cobra.Command{
		Use:   "restore CONTAINER latest|SNAPSHOT",
		Short: "Replace a container's databases with a backup (destructive)",
		Long: `Restore a backup made by pg-backup into the running container it came from
(or --into another): for each database of the snapshot (or each --db), end
every session in it, drop it, recreate it from the dump with pg_restore
--create inside the container, then compare every table's row count with the
snapshot's manifest. The dump streams from the repository into pg_restore;
nothing is written to local disk.

This destroys the current content of those databases. The command shows what
it will drop and asks for confirmation on a terminal; without a terminal it
refuses unless --yes is given.

Objects are restored owned by the container's POSTGRES_USER (pg_restore
--no-owner); with --globals the snapshot's roles (globals.sql) are applied
first and the original owners are kept. Database settings, comment and
privileges come back with the database (--create).`,
		Example: `  scalr-backup restore scalr-app-db latest
  scalr-backup restore scalr-app-db 1a2b3c4d --db app --yes`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			container, ref := args[0], args[1]
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			opts := pgstream.RestoreOptions{Into: into, Databases: databases, Globals: globals,
				Warn: func(s string) {
					if a.verbose {
						a.warnf("%s", s)
					}
				}}
			plan, err := pgstream.PlanRestore(ctx, d, r, container, ref, opts)
			if err != nil {
				return err
			}
			a.describeRestore(plan)
			if !yes {
				if !a.stdinIsTerminal() {
					return fmt.Errorf("refusing to restore without --yes: standard input is not a terminal, so nobody can confirm; nothing was changed")
				}
				fmt.Fprintf(a.stderr, "Type yes to drop and restore: ")
				line, _ := bufio.NewReader(a.stdin).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return errNotConfirmed
				}
			}
			res, err := plan.Run(ctx, d, r, opts)
			if a.jsonOutput {
				out := restoreJSON{Container: plan.Container, Target: plan.Target, Snapshot: plan.Snapshot.ID.String(), OK: err == nil, Databases: []restoreDBJSON{}}
				if err != nil {
					out.Error = err.Error()
				}
				if res != nil {
					out.Warnings, out.Seconds = res.Warnings, res.Duration.Seconds()
					for _, db := range res.Databases {
						out.Databases = append(out.Databases, restoreDBJSON{Name: db.Name, Tables: drillTables(db.Tables)})
					}
				}
				if jerr := json.NewEncoder(a.stdout).Encode(out); jerr != nil && err == nil {
					err = jerr
				}
				return err
			}
			if res != nil && !a.quiet {
				printTableChecks(a.stdout, plan.Target, res.Databases, a.verbose)
			}
			if err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "restored %d database(s) of container %s from snapshot %s in %s; row counts match the manifest\n",
					len(res.Databases), plan.Target, plan.Snapshot.ID.Str(), res.Duration.Round(100*time.Millisecond))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	f.StringArrayVar(&databases, "db", nil, "restore only this `database` of the snapshot (repeatable; default: all of them)")
	f.BoolVar(&globals, "globals", false, "apply the snapshot's roles (globals.sql) first and keep the objects' owners")
	f.StringVar(&into, "into", "", "restore into this running `container` instead of CONTAINER")
	return cmd
}

// describeRestore tells, on standard error, what a restore will destroy.
func (a *app) describeRestore(plan *pgstream.RestorePlan) {
	w := a.stderr
	sn := plan.Snapshot
	fmt.Fprintf(w, "Restore of container %s from snapshot %s (taken %s", plan.Container, sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"))
	if sn.Hostname != "" {
		fmt.Fprintf(w, " on %s", sn.Hostname)
	}
	fmt.Fprintf(w, ", Postgres %s).\n", plan.Manifest.ServerVersion)
	fmt.Fprintf(w, "This DROPS and recreates, in the running container %s (as %s):\n", plan.Target, plan.TargetUser)
	for _, db := range plan.Databases {
		fmt.Fprintf(w, "  database %-20s  from a %s dump, %d tables\n", db.Name, bytesHuman(uint64(db.Size)), len(db.Tables))
	}
	if plan.Globals {
		fmt.Fprintf(w, "after applying the snapshot's roles (globals.sql).\n")
	}
	fmt.Fprintf(w, "Every session connected to these databases is ended; their current content is lost.\n")
}

func drillTables(checks []pgstream.TableCheck) []pgstream.DrillTable {
	out := []pgstream.DrillTable{}
	for _, t := range checks {
		out = append(out, pgstream.DrillTable{Schema: t.Schema, Name: t.Name, Expected: t.Expected, Restored: t.Restored, OK: t.OK()})
	}
	return out
}

// printTableChecks prints the row count comparison: every table when all
// is true, else the ones that differ.
func printTableChecks(w io.Writer, container string, dbs []pgstream.DatabaseCheck, all bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, db := range dbs {
		for _, t := range db.Tables {
			if !all && t.OK() {
				continue
			}
			if !header {
				fmt.Fprintln(tw, "CONTAINER\tDATABASE\tTABLE\tMANIFEST\tRESTORED\tRESULT")
				header = true
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", container, db.Name, t.QualifiedName(), count(t.Expected), count(t.Restored), passFail(t.OK()))
		}
	}
	tw.Flush()
}

func count(n int64) string {
	if n < 0 {
		return "missing"
	}
	return fmt.Sprint(n)
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}
