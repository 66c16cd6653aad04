package main

// The Postgres commands' shared wiring (the Docker connection, discovery
// flags) and the discover and pg-backup commands.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/docker/client"
	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
)

// connectDocker connects to the engine DOCKER_HOST names (default: the
// local socket); the error says what to fix when it is unreachable.
func (a *app) connectDocker(ctx context.Context) (*client.Client, error) {
	return pgstream.Connect(ctx, a.getenv)
}

// warnf prints a warning on standard error (also with --quiet: a warning
// is something to act on).
func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "warning: "+format+"\n", args...)
}

// discoverFlags are the discovery options shared by discover, pg-backup and
// drill.
type discoverFlags struct {
	patterns     []string
	allDatabases bool
}

func (f *discoverFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.patterns, "pattern", nil,
		"container name `pattern` to select (repeatable; default "+strings.Join(pgstream.DefaultPatterns, ", ")+")")
	cmd.Flags().BoolVar(&f.allDatabases, "all-databases", false,
		"dump every database of each container, not only POSTGRES_DB (label "+pgstream.LabelAllDatabases+"=true does it for one)")
}

func (f *discoverFlags) options(a *app) pgstream.Options {
	return pgstream.Options{Patterns: f.patterns, AllDatabases: f.allDatabases, Warn: func(s string) { a.warnf("%s", s) }}
}

func (f *discoverFlags) describe() string {
	p := f.patterns
	if p == nil {
		p = pgstream.DefaultPatterns
	}
	return "name " + strings.Join(p, " or ") + ", or label " + pgstream.LabelBackup + "=true"
}

func (a *app) discoverCommand() *cobra.Command {
	var df discoverFlags
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "List the Postgres containers a backup would include",
		Long: `List the running Postgres containers that pg-backup would back up: those whose
name matches scalr-*-db or is scalr-auth-postgres (or --pattern), plus those
labelled scalr.backup=true, minus those labelled scalr.backup=false.

For each: the image, the Postgres version, POSTGRES_USER and the databases a
backup dumps (POSTGRES_DB; every database with --all-databases or the label
scalr.backup.all-databases=true). A selected container that cannot be
backed up (not running, no Postgres answering) is listed with the reason,
and the command then exits 1. Databases left by restores are named in
warnings: a side database of an interrupted restore (the next restore drops
it) and replaced databases kept (see previous). The Docker engine is the one
DOCKER_HOST names, else /var/run/docker.sock. Finding no container is not an
error.`,
		Example: `  scalr-backup discover
  scalr-backup discover --json | jq -r '.[].container'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			targets, err := pgstream.Discover(ctx, d, df.options(a))
			if err != nil {
				return err
			}
			if len(targets) == 0 {
				a.warnf("no running Postgres container matches (%s)", df.describe())
			}
			// What restores left behind: an interrupted one's side
			// database, replaced databases kept.
			type targetJSON struct {
				pgstream.Target
				*pgstream.RestoreState
			}
			listed := []targetJSON{}
			for _, t := range targets {
				st, err := pgstream.RestoreStateOf(ctx, d, t.Container, t.User)
				if err != nil {
					a.warnf("container %s: what restores left not checked: %v", t.Container, err)
				} else {
					for _, name := range st.Leftovers {
						a.warnf("container %s: database %s was left by an interrupted restore; the next restore drops it", t.Container, name)
					}
					for _, rd := range st.Replaced {
						a.warnf("container %s: database %s (%s) is kept from a restore; scalr-backup previous %s lists, drops or swaps it back",
							t.Container, rd.Name, bytesHuman(uint64(rd.Bytes)), t.Container)
					}
				}
				listed = append(listed, targetJSON{t, st})
			}
			var problems []string
			for _, t := range targets {
				if t.Problem != "" {
					problems = append(problems, t.Container+": "+t.Problem)
				}
			}
			var failed error
			if len(problems) > 0 {
				failed = fmt.Errorf("%d of %d selected containers cannot be backed up:\n  %s", len(problems), len(targets), strings.Join(problems, "\n  "))
			}
			if a.jsonOutput {
				if err := json.NewEncoder(a.stdout).Encode(listed); err != nil {
					return err
				}
				return failed
			}
			if len(targets) == 0 {
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER\tIMAGE\tPOSTGRES\tUSER\tDATABASES\tSELECTED BY\tSTATUS")
			for _, t := range targets {
				v := t.PostgresVersion
				if v == "" && t.PostgresMajor > 0 {
					v = fmt.Sprint(t.PostgresMajor)
				}
				status := "ok"
				if t.Problem != "" {
					status = "CANNOT BACK UP (see below)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Container, t.Image, v, t.User, strings.Join(t.Databases, ","), t.MatchedBy, status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return failed
		},
	}
	df.add(cmd)
	return cmd
}

// pgBackupResult is one container's line of the pg-backup summary.
type pgBackupResult struct {
	Container  string   `json:"container"`
	OK         bool     `json:"ok"`
	SnapshotID string   `json:"snapshot_id,omitempty"`
	Databases  []string `json:"databases,omitempty"`
	// DumpBytes is the size of the dumps, DataAdded what the repository
	// grew by (after deduplication and compression).
	DumpBytes uint64  `json:"dump_bytes"`
	DataAdded uint64  `json:"data_added"`
	Seconds   float64 `json:"duration_seconds"`
	Error     string  `json:"error,omitempty"`
}

func (a *app) pgBackupCommand() *cobra.Command {
	var (
		df            discoverFlags
		pgDumpArgs    []string
		rolePasswords bool
		host          string
		tags          []string
	)
	cmd := &cobra.Command{
		Use:   "pg-backup [CONTAINER...]",
		Short: "Back up Postgres containers, one snapshot each",
		Long: `Back up the discovered Postgres containers (see discover), or the containers
named, each into its own snapshot tagged with the container's name:

  /CONTAINER/DB.pgdump       pg_dump -Fc -Z0 of each database
  /CONTAINER/globals.sql     pg_dumpall --globals-only --no-role-passwords
  /CONTAINER/manifest.json   versions, sizes, SHA-256, exact row counts

pg_dump runs inside each container as its POSTGRES_USER over the local
socket; its output streams into the repository and is never written to local
disk. A container whose dump fails gets no snapshot; the others are still
backed up. The exit code is non-zero when any container failed. Finding no
container is a warning, not an error.

A dump can be restored by hand (drill records are tagged drill-of:CONTAINER,
never CONTAINER, so latest is the newest backup):
  restic dump --tag CONTAINER latest /CONTAINER/DB.pgdump | pg_restore ...`,
		Example: `  scalr-backup pg-backup
  scalr-backup pg-backup scalr-app-db --all-databases`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			host, err := a.hostIdentity(host)
			if err != nil {
				return err
			}
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			dopts := df.options(a)
			var targets []pgstream.Target
			var results []pgBackupResult
			if len(args) == 0 {
				targets, err = pgstream.Discover(ctx, d, dopts)
				if err != nil {
					return err
				}
				if len(targets) == 0 {
					a.warnf("no running Postgres container matches (%s): nothing to back up", df.describe())
					if a.jsonOutput {
						return json.NewEncoder(a.stdout).Encode([]pgBackupResult{})
					}
					return nil
				}
			} else {
				for _, name := range args {
					t, err := pgstream.InspectTarget(ctx, d, name, dopts)
					if err != nil {
						results = append(results, pgBackupResult{Container: name, Error: err.Error()})
						continue
					}
					targets = append(targets, t)
				}
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			for _, t := range targets {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !a.quiet && !a.jsonOutput {
					fmt.Fprintf(a.stderr, "backing up %s (%s)...\n", t.Container, strings.Join(t.Databases, ", "))
				}
				ropts := repo.BackupOptions{}
				stopProgress := a.startProgress(&ropts)
				start := time.Now()
				res, err := pgstream.BackupContainer(ctx, d, r, t, pgstream.BackupOptions{
					PgDumpArgs: pgDumpArgs, RolePasswords: rolePasswords, Hostname: host,
					ProgramVersion: "scalr-backup " + version(), Progress: ropts.Progress, Tags: tags,
				})
				stopProgress()
				line := pgBackupResult{Container: t.Container, Databases: t.Databases, Seconds: time.Since(start).Seconds()}
				if err != nil {
					line.Error = err.Error()
				} else {
					line.OK, line.SnapshotID = true, res.SnapshotID.String()
					line.DataAdded = res.Stats.DataAdded
					if res.Snapshot.Summary != nil {
						line.DumpBytes = res.Snapshot.Summary.TotalBytesProcessed
					}
				}
				results = append(results, line)
			}
			failed := 0
			for _, res := range results {
				if !res.OK {
					failed++
				}
			}
			if a.jsonOutput {
				if err := json.NewEncoder(a.stdout).Encode(results); err != nil {
					return err
				}
			} else {
				a.printPgBackupSummary(results)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d container backups failed", failed, len(results))
			}
			return nil
		},
	}
	df.add(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&pgDumpArgs, "pg-dump-arg", nil, "pg_dump `option` replacing the default -Fc -Z0 (repeatable)")
	f.BoolVar(&rolePasswords, "role-passwords", false, "keep the roles' password hashes in globals.sql")
	f.StringVarP(&host, "host", "H", "", "`hostname` recorded in the snapshots (default: $SCALR_BACKUP_HOST, else $RESTIC_HOST, else this host's name)")
	f.StringArrayVar(&tags, "tag", nil, "add a `tag` to every snapshot besides the container's name (repeatable)")
	return cmd
}

func (a *app) printPgBackupSummary(results []pgBackupResult) {
	if a.quiet {
		for _, r := range results {
			if !r.OK {
				fmt.Fprintf(a.stderr, "%s: %s\n", r.Container, r.Error)
			}
		}
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tRESULT\tSNAPSHOT\tDATABASES\tDUMPED\tADDED\tDURATION")
	for _, r := range results {
		status, id := "ok", r.SnapshotID
		if !r.OK {
			status, id = "FAILED", "-"
		} else if len(id) > 8 {
			id = id[:8]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Container, status, id, strings.Join(r.Databases, ","),
			bytesHuman(r.DumpBytes), bytesHuman(r.DataAdded), (time.Duration(r.Seconds * float64(time.Second))).Round(100*time.Millisecond))
	}
	tw.Flush()
	for _, r := range results {
		if !r.OK {
			fmt.Fprintf(a.stdout, "%s: %s\n", r.Container, r.Error)
		}
	}
}

// isTerminal reports whether the app's standard input is a terminal.
func (a *app) stdinIsTerminal() bool {
	f, ok := a.stdin.(*os.File)
	return ok && isTerminalFd(f.Fd())
}

var errNotConfirmed = errors.New("not confirmed; nothing was changed")
