// Command scalr-backup backs up the Postgres databases of a Docker host into
// a restic-format repository and inspects such repositories. This file holds
// the global flags, opening the repository, and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/memlimit"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Exit codes, as restic uses them.
const (
	exitOK          = 0
	exitError       = 1
	exitNoRepo      = 10
	exitLocked      = 11
	exitWrongPass   = 12
	exitInterrupted = 130
)

// app is the state shared by all commands of one invocation.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	repoLocation string
	repoFile     string
	passwordFile string
	passwordCmd  string
	options      []string
	jsonOutput   bool
	quiet        bool
	verbose      bool
	compression  string
	packSizeMiB  uint
	retryLock    time.Duration

	// counts is the opened backend's request counter, for --verbose.
	counts *backend.Counting
	// retryLog, when set, hears of every storage retry instead of the
	// default line on standard error (run and daemon send them to their
	// log; see storageRetry).
	retryLog func(backend.RetryEvent)
	retryMu  sync.Mutex

	// hangup, when set (by the daemon), is told of each SIGHUP.
	hangupMu sync.Mutex
	hangup   func()
}

// onHangup handles SIGHUP. restic (unlock, and any command that meets a
// lock) checks whether a lock's owner on the same host is alive by sending
// it SIGHUP, and restic itself ignores the signal: so must scalr-backup, or
// a restic command beside a backup would end the backup. Handled rather
// than ignored, so that the commands scalr-backup starts (hooks, password
// commands) keep the default.
func (a *app) onHangup() {
	a.hangupMu.Lock()
	f := a.hangup
	a.hangupMu.Unlock()
	if f != nil {
		f()
	}
}

// setHangup sets what a SIGHUP tells.
func (a *app) setHangup(f func()) {
	a.hangupMu.Lock()
	a.hangup = f
	a.hangupMu.Unlock()
}

func main() {
	// The backup's large buffers are long-lived and reused, so garbage is
	// little and a tighter GC target costs little CPU while keeping peak
	// memory near the live set. GOGC, when set, still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			a.onHangup()
		}
	}()
	// A reader that goes away (dump | head, a pg_restore that failed)
	// would otherwise kill the process at its next write to standard
	// output, before it unlocks the repository: taking SIGPIPE makes that
	// write fail with EPIPE, and the command ends as a failure, unlocked.
	// Notify, unlike Ignore, is not inherited by the commands run.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A soft memory limit near the pipeline's working set keeps the peak
	// flat in the stream's length; it follows the live heap, so a large
	// index is never collected without pause (see internal/memlimit).
	if memlimit.Applies(os.Getenv) {
		memlimit.Start(ctx, memlimit.Go{}, runtime.GOMAXPROCS(0), 100*time.Millisecond)
	}
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if a.verbose && a.counts != nil {
		c := a.counts.Snapshot()
		fmt.Fprintf(a.stderr, "storage requests: %s\n", c)
	}
	if err == nil {
		return exitOK
	}
	if !errors.As(err, new(reported)) {
		fmt.Fprintf(a.stderr, "scalr-backup: %v\n", err)
	}
	var locked *repo.LockedError
	switch {
	case ctx.Err() != nil:
		return exitInterrupted
	case errors.Is(err, backend.ErrNoRepository):
		fmt.Fprintf(a.stderr, "scalr-backup init creates the repository (run --init or SCALR_BACKUP_INIT=true does it on the first pass).\n")
		return exitNoRepo
	case errors.Is(err, repo.ErrWrongPassword):
		return exitWrongPass
	case errors.As(err, &locked):
		fmt.Fprintf(a.stderr, "Another process holds the lock. Use --retry-lock 5m to wait for it; if its holder is gone, scalr-backup unlock (or restic unlock) removes stale locks.\n")
		return exitLocked
	}
	return exitError
}

// reported is an error the command has already shown in its own output
// (run's log and report): the exit line leaves it out and only the exit
// code and the hint follow from it.
type reported struct{ err error }

func (r reported) Error() string { return r.err.Error() }
func (r reported) Unwrap() error { return r.err }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "scalr-backup",
		Short: "Back up Postgres containers into an encrypted, deduplicated restic-format repository",
		Long: `scalr-backup writes and reads restic repositories natively: everything it
stores can be checked, dumped, forgotten and pruned by the restic CLI, and it
reads what restic writes.

The repository location and password are taken from RESTIC_REPOSITORY and
RESTIC_PASSWORD / RESTIC_PASSWORD_FILE / RESTIC_PASSWORD_COMMAND, or from the
flags below; passwords are never accepted as arguments.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVarP(&a.repoLocation, "repo", "r", "", "repository `location`: a path, local:PATH, s3:HOST/BUCKET[/PREFIX] or sftp:USER@HOST:PATH (default: $RESTIC_REPOSITORY)")
	f.StringVar(&a.repoFile, "repository-file", "", "read the repository location from `file` (default: $RESTIC_REPOSITORY_FILE)")
	f.StringVarP(&a.passwordFile, "password-file", "p", "", "read the repository password from `file` (default: $RESTIC_PASSWORD_FILE)")
	f.StringVar(&a.passwordCmd, "password-command", "", "shell `command` that prints the password (default: $RESTIC_PASSWORD_COMMAND)")
	f.StringArrayVarP(&a.options, "option", "o", nil, "backend `key=value` option, e.g. s3.region=auto or sftp.identity=FILE (repeatable)")
	f.BoolVar(&a.jsonOutput, "json", false, "print JSON instead of text")
	f.BoolVarP(&a.quiet, "quiet", "q", false, "print only errors")
	f.BoolVarP(&a.verbose, "verbose", "v", false, "print more detail, including storage request counts")
	f.StringVar(&a.compression, "compression", "", "compression of new data: auto, off or max (default: $RESTIC_COMPRESSION or auto)")
	f.UintVar(&a.packSizeMiB, "pack-size", 0, "target pack size in MiB, 4 to 128 (default: $RESTIC_PACK_SIZE or 16)")
	f.DurationVar(&a.retryLock, "retry-lock", 0, "retry taking a lock held by another process for this `duration` (e.g. 5m)")
	root.AddCommand(
		a.initCommand(),
		a.backupCommand(),
		a.snapshotsCommand(),
		a.dumpCommand(),
		a.catCommand(),
		a.keyCommand(),
		a.forgetCommand(),
		a.pruneCommand(),
		a.checkCommand(),
		a.discoverCommand(),
		a.pgBackupCommand(),
		a.restoreCommand(),
		a.previousCommand(),
		a.drillCommand(),
		a.runCommand(),
		a.daemonCommand(),
		a.retireCommand(),
		a.unlockCommand(),
		a.repairCommand(),
		a.rewindCommand(),
		a.versionCommand(),
	)
	return root
}
