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

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgstream"
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

// discoverFlags are the discovery flags of every command that discovers
// containers: discover, pg-backup, drill, run and daemon. They read the
// same environment (nightly.LoadDiscovery: SCALR_BACKUP_PATTERNS,
// SCALR_BACKUP_DATABASES, SCALR_BACKUP_ALL_DATABASES) the same way; set
// flags win.
type discoverFlags struct {
	patterns     []string
	databases    []string
	allDatabases bool
}

func (f *discoverFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.patterns, "pattern", nil,
		"container name `pattern` to select (repeatable; default: $SCALR_BACKUP_PATTERNS or "+strings.Join(pgstream.DefaultPatterns, ", ")+")")
	fl.StringArrayVar(&f.databases, "databases", nil,
		"the `databases` of each container to back up: all, POSTGRES_DB or name patterns, separated by commas (repeatable; default: $SCALR_BACKUP_DATABASES or all; label "+pgstream.LabelDatabases+" sets it for one container)")
	fl.BoolVar(&f.allDatabases, "all-databases", false, "the same as --databases all")
}

// apply gives the flags' patterns and databases, or else the ones given
// (the environment's).
func (f *discoverFlags) apply(patterns, databases []string) ([]string, []string, error) {
	if f.patterns != nil {
		patterns = f.patterns
	}
	if f.databases != nil {
		if f.allDatabases {
			return nil, nil, errors.New("--all-databases and --databases: give one")
		}
		databases = nil
		for _, v := range f.databases {
			l, err := pgstream.ParseDatabases(v)
			if err != nil {
				return nil, nil, fmt.Errorf("--databases %q: %w", v, err)
			}
			databases = append(databases, l...)
		}
	}
	if f.allDatabases {
		databases = []string{pgstream.SelectAll}
	}
	return patterns, databases, pgstream.CheckDatabases(databases)
}

// discoveryOptions are the discovery options of discover, pg-backup and
// drill: the environment as nightly.LoadDiscovery reads it (as run and
// daemon do), then the flags.
func (a *app) discoveryOptions(f *discoverFlags) (pgstream.Options, error) {
	disc, err := nightly.LoadDiscovery(a.getenv)
	if err != nil {
		return pgstream.Options{}, err
	}
	patterns, databases, err := f.apply(disc.Patterns, disc.Databases)
	if err != nil {
		return pgstream.Options{}, err
	}
	return pgstream.Options{Patterns: patterns, Databases: databases, Warn: func(s string) { a.warnf("%s", s) }}, nil
}

// describeSelection says which containers discovery selects.
func describeSelection(o pgstream.Options) string {
	p := o.Patterns
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
		Long: `List the Postgres containers that pg-backup, run and daemon would back up:
those whose name matches scalr-*-db or is scalr-auth-postgres (or
$SCALR_BACKUP_PATTERNS, or --pattern), plus those labelled
scalr.backup=true, minus those labelled scalr.backup=false.

For each it connects to the server as the tools would, with a cheap query:
as POSTGRES_USER (or the file POSTGRES_USER_FILE names) with the password
POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE gives (or the container's own
PGPASSWORD), on the port the server's command line, PGPORT or its socket
shows. It lists the image, the Postgres version, the role, the port and the
databases a backup dumps: by default every database that accepts
connections, templates excepted; $SCALR_BACKUP_DATABASES or --databases
restricts them (POSTGRES_DB, or name patterns), and the label
scalr.backup.databases sets them for one container. Databases left out are
named in warnings, with the reason.

A selected container that cannot be backed up (not running, no Postgres,
no connection: authentication, port; a database it names missing) is
listed with the reason, and the command then exits 1. Databases left by
restores are named in warnings: a side database of an interrupted restore
(the next restore drops it) and replaced databases kept (see previous). The
Docker engine is the one DOCKER_HOST names, else /var/run/docker.sock.
Finding no container is not an error.`,
		Example: `  scalr-backup discover
  scalr-backup discover --json | jq -r '.[].container'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			dopts, err := a.discoveryOptions(&df)
			if err != nil {
				return err
			}
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			targets, err := pgstream.Discover(ctx, d, dopts)
			if err != nil {
				return err
			}
			if len(targets) == 0 {
				a.warnf("no running Postgres container matches (%s)", describeSelection(dopts))
			}
			// What restores left behind: an interrupted one's side
			// database, replaced databases kept.
			type targetJSON struct {
				pgstream.Target
				*pgstream.RestoreState
			}
			listed := []targetJSON{}
			for _, t := range targets {
				if t.Problem != "" {
					listed = append(listed, targetJSON{t, nil})
					continue
				}
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
			fmt.Fprintln(tw, "CONTAINER\tIMAGE\tPOSTGRES\tUSER\tPORT\tDATABASES\tSELECTED BY\tSTATUS")
			for _, t := range targets {
				v := t.PostgresVersion
				if v == "" && t.PostgresMajor > 0 {
					v = fmt.Sprint(t.PostgresMajor)
				}
				status := "ok"
				if t.Problem != "" {
					status = "CANNOT BACK UP (see below)"
				}
				port := "-"
				if t.Port > 0 {
					port = fmt.Sprint(t.Port)
				}
				dbs := strings.Join(t.Databases, ",")
				if dbs == "" {
					dbs = "-"
				}
				if len(t.LeftOut) > 0 {
					dbs += fmt.Sprintf(" (%d left out)", len(t.LeftOut))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Container, t.Image, v, t.User, port, dbs, t.MatchedBy, status)
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
	// restic backup's summary names: TotalBytesProcessed is the size of
	// the dumps, DataAdded what the repository grew by after
	// deduplication, DataAddedPacked after compression too. run --json
	// names them the same.
	TotalBytesProcessed uint64  `json:"total_bytes_processed"`
	DataAdded           uint64  `json:"data_added"`
	DataAddedPacked     uint64  `json:"data_added_packed"`
	Seconds             float64 `json:"duration_seconds"`
	Error               string  `json:"error,omitempty"`
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
socket, with the password and port discover finds; its output streams into
the repository and is never written to local disk. Every database is dumped
unless $SCALR_BACKUP_DATABASES, --databases or the container's label
scalr.backup.databases restricts them (see discover); those left out are
named in warnings and in the snapshot's manifest. A container whose dump fails gets no snapshot; the others are still
backed up. The exit code is non-zero when any container failed. Finding no
container is a warning, not an error.

A dump can be restored by hand (drill records are tagged drill-of:CONTAINER,
never CONTAINER, so latest is the newest backup):
  restic dump --tag CONTAINER latest /CONTAINER/DB.pgdump | pg_restore ...`,
		Example: `  scalr-backup pg-backup
  scalr-backup pg-backup scalr-app-db --databases POSTGRES_DB`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
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
			var targets []pgstream.Target
			var results []pgBackupResult
			if len(args) == 0 {
				targets, err = pgstream.Discover(ctx, d, dopts)
				if err != nil {
					return err
				}
				if len(targets) == 0 {
					a.warnf("no running Postgres container matches (%s): nothing to back up", describeSelection(dopts))
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
				update, stopProgress := a.backupMeter(t.Container)
				start := time.Now()
				res, err := pgstream.BackupContainer(ctx, d, r, t, pgstream.BackupOptions{
					PgDumpArgs: pgDumpArgs, RolePasswords: rolePasswords, Hostname: host,
					ProgramVersion: "scalr-backup " + version(), Progress: update, Tags: tags,
				})
				stopProgress()
				line := pgBackupResult{Container: t.Container, Databases: t.Databases, Seconds: time.Since(start).Seconds()}
				if err != nil {
					line.Error = err.Error()
				} else {
					line.OK, line.SnapshotID = true, res.SnapshotID.String()
					line.DataAdded, line.DataAddedPacked = res.Stats.DataAdded, res.Stats.DataAddedPacked
					if res.Snapshot.Summary != nil {
						line.TotalBytesProcessed = res.Snapshot.Summary.TotalBytesProcessed
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
			bytesHuman(r.TotalBytesProcessed), bytesHuman(r.DataAdded), (time.Duration(r.Seconds * float64(time.Second))).Round(100*time.Millisecond))
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
