package main

// The nightly service's commands: run (one pass) and daemon (passes on a
// schedule); cmd_daemon.go has the daemon. The work is in package nightly;
// this file reads the configuration, opens the repository and wires
// nightly's Discoverer, BackupFunc and DrillFunc to the Postgres
// containers through package pgnightly.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgnightly"
	"github.com/scalr-platform/scalr-backup/repo"
)

// nightlyFlags are the flags run and daemon share; set ones win over the
// environment.
type nightlyFlags struct {
	init      bool
	disc      discoverFlags // --pattern, --databases, as every command
	logFormat string
	host      string
}

func (f *nightlyFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.init, "init", false, "create the repository if there is none yet (default: $SCALR_BACKUP_INIT)")
	f.disc.add(cmd)
	fl.StringVar(&f.logFormat, "log-format", "", "log `format` on standard error: auto, json or text (default: $SCALR_BACKUP_LOG_FORMAT or auto: text on a terminal, else JSON)")
	fl.StringVarP(&f.host, "host", "H", "", "`hostname` recorded in snapshots; forget only touches this host's (default: $SCALR_BACKUP_HOST, else $RESTIC_HOST, else this host's name)")
}

// nightlyConfig reads the environment and applies the flags.
func (a *app) nightlyConfig(f *nightlyFlags) (nightly.Config, error) {
	cfg, err := nightly.LoadConfig(a.getenv)
	if err != nil {
		return cfg, err
	}
	if f.init {
		cfg.Init = true
	}
	if cfg.Patterns, cfg.Databases, err = f.disc.apply(cfg.Patterns, cfg.Databases); err != nil {
		return cfg, err
	}
	// The CLI's one host identity (--host > SCALR_BACKUP_HOST >
	// RESTIC_HOST > the OS host name), which LoadConfig also follows
	// without the flag: run, daemon, backup, pg-backup and drill agree.
	host, err := a.hostIdentity(f.host)
	if err != nil {
		return cfg, err
	}
	cfg.Host = host
	switch f.logFormat {
	case "":
	case "auto", "json", "text":
		cfg.LogFormat = f.logFormat
	default:
		return cfg, fmt.Errorf("--log-format %q: want auto, json or text", f.logFormat)
	}
	return cfg, nil
}

// nightlyLogger logs to standard error: text on a terminal, JSON otherwise
// (or as configured); --quiet shows warnings and errors only, --verbose
// adds debug lines.
func (a *app) nightlyLogger(cfg nightly.Config) *slog.Logger {
	level := slog.LevelInfo
	if a.quiet {
		level = slog.LevelWarn
	}
	if a.verbose {
		level = slog.LevelDebug
	}
	f, ok := a.stderr.(*os.File)
	terminal := ok && isTerminalFd(f.Fd())
	return nightly.NewLogger(a.stderr, cfg.LogFormat, terminal, level)
}

// nightlyOpener returns the Service's Open: the repository from the usual
// flags and environment (repoenv), opened afresh for each pass; with
// cfg.Init it is created when missing. Lock conflicts are retried for
// --retry-lock, else SCALR_BACKUP_RETRY_LOCK. A failed open reports the
// requests it made, its retries too.
func (a *app) nightlyOpener(cfg nightly.Config, log *slog.Logger) func(ctx context.Context) (*repo.Repository, error) {
	return func(ctx context.Context) (*repo.Repository, error) {
		s := a.settings(openPrompt)
		s.Opened = nil // a pass reports its own requests (nightly.WithRequests)
		if s.LockRetry == 0 {
			s.LockRetry = cfg.RetryLock
		}
		o, err := s.OpenOrInit(ctx, cfg.Init)
		if err != nil {
			return nil, nightly.WithRequests(err, o.Requests)
		}
		if o.Created {
			log.Warn("created a new repository: keep its password safe, losing it loses every backup in it",
				"repository", o.Repo.Backend().Location(), "id", o.Repo.Config().ID[:10])
		}
		return o.Repo, nil
	}
}

// logRetries sends the storage retries to log, one warning each, with the
// operation, object, attempt, delay and error as attributes; also to m's
// health (nil: not).
func (a *app) logRetries(log *slog.Logger, m *nightly.Metrics) {
	a.retryLog = func(ev backend.RetryEvent) {
		log.Warn("storage retry", "op", ev.Op, "object", ev.Object(), "attempt", ev.Attempt,
			"delay", ev.Delay.Round(time.Millisecond).String(), "error", ev.Err.Error())
		if m != nil {
			m.NoteRetry(ev)
		}
	}
}

// nightlyWiring is what the nightly service needs from the outside world.
type nightlyWiring struct {
	discover nightly.Discoverer
	backup   nightly.BackupFunc
	drill    nightly.DrillFunc
	close    func()
}

// nightlyDeps wires the nightly service to the Postgres containers
// (package pgnightly: discovery by SCALR_BACKUP_PATTERNS / --pattern,
// labels and SCALR_BACKUP_ALL_DATABASES, pg_dump backups, the drill).
func (a *app) nightlyDeps(_ context.Context, cfg nightly.Config, log *slog.Logger) (nightlyWiring, error) {
	w := pgnightly.New(cfg, pgnightly.Options{
		Getenv: a.getenv, Logger: log, ProgressEvery: a.logProgressEvery(),
		ProgramVersion: "scalr-backup " + version(),
	})
	return nightlyWiring{
		discover: w,
		backup:   w.Backup,
		drill:    w.Drill,
		close:    func() { _ = w.Close() },
	}, nil
}

// nightlyService builds the Service of a run or a daemon.
func (a *app) nightlyService(cfg nightly.Config, w nightlyWiring, log *slog.Logger, m *nightly.Metrics) *nightly.Service {
	return &nightly.Service{
		Config: cfg, Open: a.nightlyOpener(cfg, log),
		Discoverer: w.discover, Backup: w.backup, Drill: w.drill,
		Metrics: m, Logger: log,
	}
}

func (a *app) runCommand() *cobra.Command {
	var (
		f        nightlyFlags
		textfile string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run one backup pass: back up every Postgres container, then forget and prune",
		Long: `Run one full nightly pass and exit:

  1. open the repository (--init creates it when there is none),
  2. discover the running Postgres containers (see discover),
  3. back up each into its own snapshot tagged with its name; one failing
     container never stops the others,
  4. forget by the retention policy, per container (grouped by host and
     paths), over container backups; and, apart, keep the newest
     SCALR_BACKUP_DRILL_KEEP (12) drill records per container and host;
     other snapshots are never touched,
  5. prune what no snapshot needs any more.

Every container this host has backed up before (its snapshots in the
repository) and has not retired (see retire) must be found again: one that
is missing (removed, renamed) fails the pass by name, as does a selected one
that is not running (exited, restarting, paused, dead) or has no Postgres,
while the others are still backed up.

Prints one row per container (status, duration, bytes read, bytes added,
snapshot) or, with --json, the whole report. Storage retries are logged as
they happen. Alerts go out as configured
(SCALR_BACKUP_ON_FAILURE, _ON_SUCCESS, _WEBHOOK_URL, _HEALTHCHECK_URL); with
--textfile the metrics are written for node_exporter's textfile collector
(counters carry on from the previous file).
Use it from cron or a systemd timer, or run the daemon instead.

The exit code is 0 only when everything succeeded; 1 when any container or
step failed; 10, 11, 12 when the repository is missing, locked, or the
password is wrong; 130 when interrupted (the running backup is abandoned,
its lock removed).

Configuration (environment; flags win):
` + envTable(),
		Example: `  # once, creating the repository on first use
  RESTIC_REPOSITORY=s3:https://ACCOUNT.r2.cloudflarestorage.com/backups \
  RESTIC_PASSWORD_FILE=/run/secrets/restic scalr-backup run --init

  # from cron, with metrics for node_exporter
  scalr-backup run --textfile /var/lib/node_exporter/textfile/scalr_backup.prom

  # machine-readable report
  scalr-backup run --json | jq '.targets[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := a.nightlyConfig(&f)
			if err != nil {
				return err
			}
			if textfile != "" {
				if !strings.HasSuffix(textfile, ".prom") {
					return fmt.Errorf("--textfile %q: node_exporter's textfile collector reads only files ending in .prom", textfile)
				}
				cfg.Textfile = textfile
			}
			log := a.nightlyLogger(cfg)
			w, err := a.nightlyDeps(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer w.close()
			return a.nightlyRun(ctx, cfg, w, log)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&textfile, "textfile", "", "write metrics to this `file` (must end in .prom) for node_exporter (default: $SCALR_BACKUP_TEXTFILE)")
	return cmd
}

// nightlyRun runs one pass with the given wiring, prints the report,
// writes the textfile and turns the outcome into the command's error.
func (a *app) nightlyRun(ctx context.Context, cfg nightly.Config, w nightlyWiring, log *slog.Logger) error {
	var m *nightly.Metrics
	if cfg.Textfile != "" {
		m = nightly.NewMetrics(cfg.StaleAfter, nil)
		m.SetBuildInfo(version(), revision())
		// Counters go on from the previous run's file.
		if err := m.LoadTextfile(cfg.Textfile); err != nil {
			log.Warn("the previous metrics textfile's counters are not carried over: they restart from 0", "error", err)
		}
	}
	a.logRetries(log, nil)
	s := a.nightlyService(cfg, w, log, m)
	rep := s.RunPass(ctx)
	if m != nil {
		if err := m.WriteTextfile(cfg.Textfile); err != nil {
			log.Error("writing the metrics textfile failed", "error", err)
			if rep.OK() {
				return err
			}
		}
	}
	if a.jsonOutput {
		if err := a.emitJSON(rep); err != nil {
			return err
		}
	} else {
		a.printNightlyReport(rep)
	}
	if rep.OK() {
		return nil
	}
	if rep.Cancelled && ctx.Err() != nil {
		return ctx.Err()
	}
	for _, e := range rep.Errors {
		if e.Stage == "open" {
			// Keep the repository's own error (and so its exit code). The
			// log and the report have said it: the exit line must not say
			// it a third time, only add the hint.
			return reported{e.Err}
		}
	}
	// The exit line sums up ("1 of 3 container backups failed: …").
	return rep.Err()
}

// printNightlyReport prints the per-container table and the pass's other
// steps.
func (a *app) printNightlyReport(rep *nightly.Report) {
	if a.quiet {
		if !rep.OK() {
			fmt.Fprint(a.stderr, nightly.Summary(rep))
		}
		return
	}
	if len(rep.Targets) > 0 {
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CONTAINER\tSTATUS\tDURATION\tREAD\tADDED\tSNAPSHOT")
		for _, t := range rep.Targets {
			id := "-"
			if t.SnapshotID != "" {
				id = t.SnapshotID[:8]
			}
			read, added := "-", "-"
			if t.Status == nightly.StatusOK {
				read, added = bytesHuman(t.BytesRead), bytesHuman(t.BytesAdded)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Status, t.Duration.Round(100*time.Millisecond), read, added, id)
		}
		tw.Flush()
	}
	for _, t := range rep.Failed() {
		fmt.Fprintf(a.stdout, "%s: %s\n", t.Name, t.Error)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(a.stdout, "%s failed: %v\n", e.Stage, e.Err)
	}
	if rep.Forget != nil {
		f := rep.Forget
		fmt.Fprintf(a.stdout, "forget: %s per container: removed %d snapshots\n", f.Policy, f.Removed-f.DrillsRemoved)
		if f.DrillPolicy != "" {
			fmt.Fprintf(a.stdout, "forget drill records: %s per container: removed %d\n", f.DrillPolicy, f.DrillsRemoved)
		}
	}
	if p := rep.Prune; p != nil {
		fmt.Fprintf(a.stdout, "prune: removed %d packs, repacked %d, freed %s\n", p.PacksRemove+p.PacksUnreferenced, p.PacksRepack, bytesHuman(p.RemoveSize+p.UnreferencedSize))
	}
	if f := rep.Forget; f != nil && f.Deferred.Files > 0 {
		fmt.Fprintf(a.stdout, "forget: %s\n", &f.Deferred)
	}
	if p := rep.Prune; p != nil && p.Deferred.Files > 0 {
		fmt.Fprintf(a.stdout, "prune: %s\n", &p.Deferred)
	}
	if st := rep.Retention; st != nil {
		fmt.Fprintf(a.stdout, "retention: %d objects the kept snapshots need, %d extended to %s, all locked until %s at least\n",
			st.Objects, st.Extended, st.Until.Format(time.RFC3339), st.EarliestEnd.Format(time.RFC3339))
	}
	status := "OK"
	switch {
	case rep.Cancelled:
		status = "CANCELLED"
	case !rep.OK():
		status = "FAILED"
	}
	fmt.Fprintf(a.stdout, "pass %s in %s (%s)\n", status, rep.Duration.Round(100*time.Millisecond), rep.Requests)
}

// envTable lists the environment variables for --help.
func envTable() string {
	var b strings.Builder
	for _, e := range nightly.Environment() {
		def := e.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(&b, "  %s (default %s)\n      %s\n", e.Name, def, e.Meaning)
	}
	return strings.TrimRight(b.String(), "\n")
}
