package main

import (
	"bufio"
	"context"
	"errors"
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
	Host      string          `json:"host"`
	Snapshot  string          `json:"snapshot"`
	InPlace   bool            `json:"in_place"`
	Databases []restoreDBJSON `json:"databases"`
	Warnings  []string        `json:"warnings,omitempty"`
	// LeftoversDropped are interrupted restores' side databases dropped.
	LeftoversDropped []string `json:"leftovers_dropped,omitempty"`
	Seconds          float64  `json:"duration_seconds"`
	OK               bool     `json:"ok"`
	Error            string   `json:"error,omitempty"`
}

type restoreDBJSON struct {
	Name   string                `json:"name"`
	Tables []pgstream.DrillTable `json:"tables"`
	// Previous is the name the replaced database is kept under.
	Previous        string `json:"previous,omitempty"`
	PreviousBytes   int64  `json:"previous_bytes,omitempty"`
	PreviousDropped bool   `json:"previous_dropped,omitempty"`
}

// testStallEnv names a restore stage at which the command stops for an
// hour after announcing it: the crash tests kill -9 it there. Never set in
// production; it changes no data.
const testStallEnv = "SCALR_BACKUP_TEST_STALL_AT"

func (a *app) restoreCommand() *cobra.Command {
	var (
		yes          bool
		databases    []string
		globals      bool
		into         string
		host         string
		inPlace      bool
		dropPrevious bool
	)
	cmd := &cobra.Command{
		Use:   "restore CONTAINER latest|SNAPSHOT",
		Short: "Restore a container's databases from a backup, keeping the current ones",
		Long: `Restore a backup made by pg-backup into the running container it came from
(or --into another), without ever putting the live databases at risk:

  1. Preflight, before anything is created: the container's pg_restore must
     read the dump (a dump of a newer Postgres major version is refused),
     every extension the dump creates must be available, every role it grants
     to must exist (or come with --globals), and the data directory must have
     room for a second copy.
  2. Each database is restored beside the live one, into a side database
     (scalr_restore_TIMESTAMP_NAME) with the dump's encoding and locale; the
     dump streams from the repository into pg_restore inside the container,
     nothing is written to local disk. Its database settings, comment and
     privileges are applied, and every table's row count is compared with
     the snapshot's manifest.
  3. Only then, in one transaction, the live database's sessions are ended,
     it is renamed NAME__replaced_TIMESTAMP and the restored one takes its
     name. The replaced database is kept: see 'scalr-backup previous' to list
     it, drop it or swap it back.

A failure at any step drops the side database and leaves the live one as it
was; a crash leaves either the old or the new database live, and the next
restore drops what an interrupted one left.

The backup is the container's newest ("latest") or the given snapshot, made
on this host (--host, else $SCALR_BACKUP_HOST, $RESTIC_HOST, the host name);
--host names another host's backups. The command shows the plan and asks for
confirmation on a terminal; without a terminal it refuses unless --yes.

--in-place drops each live database first and restores under its own name
(for a server without room for the second copy): a failure then leaves the
database missing or partly restored. It asks a second time.

Objects are restored owned by the container's POSTGRES_USER (pg_restore
--no-owner); with --globals the snapshot's roles (globals.sql) are applied
first and the original owners are kept.`,
		Example: `  scalr-backup restore scalr-app-db latest
  scalr-backup restore scalr-app-db 1a2b3c4d --db app --yes
  scalr-backup restore scalr-app-db latest --host staging-1
  scalr-backup previous scalr-app-db`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			container, ref := args[0], args[1]
			self, err := a.hostIdentity("")
			if err != nil {
				return err
			}
			if host == "" {
				host = self
			}
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
			opts := pgstream.RestoreOptions{Into: into, Host: host, Databases: databases, Globals: globals,
				InPlace: inPlace, DropPrevious: dropPrevious,
				Warn: func(s string) {
					if a.verbose {
						a.warnf("%s", s)
					}
				},
				Progress: a.restoreProgress(ctx)}
			plan, err := pgstream.PlanRestore(ctx, d, r, container, ref, opts)
			if plan != nil && (err == nil || errors.Is(err, pgstream.ErrPreflight)) {
				a.describeRestore(plan, self)
			}
			if err != nil {
				return err
			}
			if !yes {
				if err := a.confirmRestore(inPlace); err != nil {
					return err
				}
			}
			res, err := plan.Run(ctx, d, r, opts)
			if a.jsonOutput {
				if jerr := a.emitJSON(newRestoreJSON(plan, host, res, err)); jerr != nil && err == nil {
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
				a.printRestored(plan, res)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	f.StringArrayVar(&databases, "db", nil, "restore only this `database` of the snapshot (repeatable; default: all of them)")
	f.BoolVar(&globals, "globals", false, "apply the snapshot's roles (globals.sql) first and keep the objects' owners")
	f.StringVar(&into, "into", "", "restore into this running `container` instead of CONTAINER")
	f.StringVarP(&host, "host", "H", "", "restore a backup made on this `host` (default: $SCALR_BACKUP_HOST, $RESTIC_HOST, this host's name)")
	f.BoolVar(&inPlace, "in-place", false, "drop each live database first instead of restoring beside it (no room needed; a failure loses it)")
	f.BoolVar(&dropPrevious, "drop-previous", false, "drop the replaced database once the restored one is live, instead of keeping it")
	return cmd
}

// restoreProgress prints each restore step (not with --quiet or --json),
// and stalls at the step testStallEnv names.
func (a *app) restoreProgress(ctx context.Context) func(pgstream.RestoreStep) {
	stall := a.getenv(testStallEnv)
	return func(s pgstream.RestoreStep) {
		if !a.quiet && !a.jsonOutput {
			a.printRestoreStep(s)
		}
		if stall != "" && s.Stage == stall {
			fmt.Fprintf(a.stderr, "restore: stalled at %s (%s)\n", s.Stage, testStallEnv)
			select {
			case <-ctx.Done():
			case <-time.After(time.Hour):
			}
		}
	}
}

// confirmRestore asks on the terminal; a second time for --in-place.
func (a *app) confirmRestore(inPlace bool) error {
	if !a.stdinIsTerminal() {
		return fmt.Errorf("refusing to restore without --yes: standard input is not a terminal, so nobody can confirm; nothing was changed")
	}
	in := bufio.NewReader(a.stdin)
	fmt.Fprintf(a.stderr, "Type yes to restore: ")
	line, _ := in.ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return errNotConfirmed
	}
	if inPlace {
		fmt.Fprintf(a.stderr, "--in-place DROPS the live database(s) before restoring; a failure leaves them missing. Type in-place to go on: ")
		line, _ := in.ReadString('\n')
		if strings.TrimSpace(line) != "in-place" {
			return errNotConfirmed
		}
	}
	return nil
}

// newRestoreJSON is restore --json's line; res may be nil, err is the
// restore's outcome.
func newRestoreJSON(plan *pgstream.RestorePlan, host string, res *pgstream.RestoreResult, err error) restoreJSON {
	out := restoreJSON{Container: plan.Container, Target: plan.Target, Host: host, Snapshot: plan.Snapshot.ID.String(),
		InPlace: plan.InPlace, OK: err == nil, Databases: []restoreDBJSON{}}
	if err != nil {
		out.Error = err.Error()
	}
	if res != nil {
		out.Warnings, out.Seconds, out.LeftoversDropped = res.Warnings, res.Duration.Seconds(), res.LeftoversDropped
		for _, db := range res.Databases {
			out.Databases = append(out.Databases, restoreDBJSON{Name: db.Name, Tables: drillTables(db.Tables),
				Previous: db.Previous, PreviousBytes: db.PreviousBytes, PreviousDropped: db.PreviousDropped})
		}
	}
	return out
}

// printRestored says what a finished restore did with each replaced
// database, and how to swap it back or drop it.
func (a *app) printRestored(plan *pgstream.RestorePlan, res *pgstream.RestoreResult) {
	fmt.Fprintf(a.stdout, "restored %d database(s) of container %s from snapshot %s in %s; row counts match the manifest\n",
		len(res.Databases), plan.Target, plan.Snapshot.ID.Str(), res.Duration.Round(100*time.Millisecond))
	for _, db := range res.Databases {
		switch {
		case db.PreviousDropped:
			fmt.Fprintf(a.stdout, "database %s: the replaced database %s (%s) was dropped (--drop-previous)\n", db.Name, db.Previous, bytesHuman(uint64(db.PreviousBytes)))
		case db.Previous != "":
			fmt.Fprintf(a.stdout, "database %s: the replaced database is kept as %s (%s); swap back: scalr-backup previous %s swap-back %s; drop: scalr-backup previous %s drop %s\n",
				db.Name, db.Previous, bytesHuman(uint64(db.PreviousBytes)), plan.Target, db.Previous, plan.Target, db.Previous)
		}
	}
}

// printRestoreStep prints a restore's progress on standard error.
func (a *app) printRestoreStep(s pgstream.RestoreStep) {
	var what string
	switch s.Stage {
	case pgstream.StageLeftover:
		what = "dropping " + s.Detail + ", left by an interrupted restore"
	case pgstream.StageGlobals:
		what = "applying the snapshot's roles (globals.sql)"
	case pgstream.StageCreate:
		what = "creating the side database " + s.Detail
	case pgstream.StageRestore:
		what = "pg_restore into " + s.Detail
	case pgstream.StageVerify:
		what = "comparing the row counts of " + s.Detail + " with the manifest"
	case pgstream.StageSwap:
		what = "swapping the restored database in"
		if s.Detail != "" {
			what += "; the live one becomes " + s.Detail
		}
	case pgstream.StageSwapCommit:
		what = "committing the swap"
	case pgstream.StageSwapped:
		what = "the restored database is live"
	case pgstream.StageDropPrevious:
		what = "dropping the replaced database " + s.Detail
	case pgstream.StageDropInPlace:
		what = "dropping the live database (--in-place)"
	default:
		what = s.Stage + " " + s.Detail
	}
	if s.Database != "" {
		fmt.Fprintf(a.stderr, "restore: database %s: %s\n", s.Database, what)
	} else {
		fmt.Fprintf(a.stderr, "restore: %s\n", what)
	}
}

// describeRestore tells, on standard error, what a restore will do; self
// is this host's identity, to point out a backup of another host.
func (a *app) describeRestore(plan *pgstream.RestorePlan, self string) {
	w := a.stderr
	sn := plan.Snapshot
	fmt.Fprintf(w, "Restore of container %s from snapshot %s (taken %s on host %s", plan.Container, sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"), sn.Hostname)
	if sn.Hostname != self {
		fmt.Fprintf(w, ", NOT this host %s", self)
	}
	fmt.Fprintf(w, ", Postgres %s)", plan.Manifest.ServerVersion)
	if s := plan.Server; s != nil {
		fmt.Fprintf(w, " into Postgres %s", s.Version)
	}
	fmt.Fprintf(w, ".\n")
	if plan.InPlace {
		fmt.Fprintf(w, "IN PLACE: this DROPS and recreates, in the running container %s (as %s):\n", plan.Target, plan.TargetUser)
	} else {
		fmt.Fprintf(w, "Restores beside the live databases of the running container %s (as %s), then swaps them in:\n", plan.Target, plan.TargetUser)
	}
	for _, db := range plan.Databases {
		state := "new"
		if plan.Server != nil && plan.Server.Exists(db.Name) {
			state = "live now: " + bytesHuman(uint64(plan.Server.Size(db.Name)))
			if !plan.InPlace {
				state += ", will be kept as NAME__replaced_TIMESTAMP"
			}
		}
		fmt.Fprintf(w, "  database %-20s  from a %s dump, %d tables (%s)\n", db.Name, bytesHuman(uint64(db.Size)), len(db.Tables), state)
	}
	if s := plan.Server; s != nil && !plan.InPlace && s.FreeBytes >= 0 {
		fmt.Fprintf(w, "Room in %s: %s free, %s needed.\n", s.DataDirectory, bytesHuman(uint64(s.FreeBytes)), bytesHuman(uint64(s.NeededBytes)))
	}
	if plan.Globals {
		fmt.Fprintf(w, "The snapshot's roles (globals.sql) are applied first.\n")
	}
	if len(plan.Leftovers) > 0 {
		fmt.Fprintf(w, "Side databases left by interrupted restores, dropped first: %s\n", strings.Join(plan.Leftovers, ", "))
	}
	if plan.InPlace {
		fmt.Fprintf(w, "Every session connected to these databases is ended; their current content is lost.\n")
	} else {
		fmt.Fprintf(w, "Sessions connected to the live databases are ended at the swap; their content is kept.\n")
	}
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
