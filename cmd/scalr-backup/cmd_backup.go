package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) backupCommand() *cobra.Command {
	var (
		stdin        bool
		fromCommand  bool
		filename     string
		tags         []string
		host         string
		timeOverride string
	)
	cmd := &cobra.Command{
		Use:   "backup --stdin | --stdin-from-command -- COMMAND [ARGS...]",
		Short: "Store a stream as a snapshot",
		Long: `Store standard input, or the standard output of a command, as a one-file
snapshot, exactly as "restic backup --stdin --stdin-filename NAME" does.

With --stdin-from-command, a command that exits non-zero or is killed saves
no snapshot and the backup fails with the command's status. An empty stream
is an error: an empty dump is almost always a failed dump.`,
		Example: `  pg_dump -Fc app | scalr-backup backup --stdin --stdin-filename app.pgdump --tag scalr-app-db
  scalr-backup backup --stdin-from-command --stdin-filename app.pgdump -- pg_dump -Fc -Z0 app`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if stdin == fromCommand {
				return errors.New("give exactly one of --stdin or --stdin-from-command")
			}
			if stdin && len(args) > 0 {
				return errors.New("--stdin reads standard input; it takes no arguments")
			}
			if fromCommand && len(args) == 0 {
				return errors.New("--stdin-from-command needs a command after --")
			}
			var when time.Time // zero: the backup's start
			if timeOverride != "" {
				t, err := time.ParseInLocation("2006-01-02 15:04:05", timeOverride, time.Local)
				if err != nil {
					return fmt.Errorf("--time %q: want \"YYYY-MM-DD hh:mm:ss\"", timeOverride)
				}
				when = t
			}
			host, err := a.hostIdentity(host)
			if err != nil {
				return err
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()

			stream := repo.Stream{Name: filename, Reader: a.stdin}
			if fromCommand {
				rd, wait, err := startCommand(ctx, args, a.stderr)
				if err != nil {
					return err
				}
				stream.Reader, stream.Close = rd, wait
			}
			opts := repo.BackupOptions{Tags: tags, Hostname: host, Time: when, ProgramVersion: "scalr-backup " + version()}
			update, stopProgress := a.backupMeter("")
			opts.Progress = update
			res, err := r.BackupStream(ctx, stream, opts)
			stopProgress()
			if err != nil {
				return err
			}
			return a.printBackupSummary(res)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&stdin, "stdin", false, "read the data from standard input")
	f.BoolVar(&fromCommand, "stdin-from-command", false, "run the command after -- and store its standard output")
	f.StringVar(&filename, "stdin-filename", "stdin", "file `name` of the stream inside the snapshot")
	f.StringArrayVar(&tags, "tag", nil, "add a `tag` to the snapshot (repeatable; a,b adds both)")
	f.StringVarP(&host, "host", "H", "", "`hostname` recorded in the snapshot (default: $SCALR_BACKUP_HOST, else $RESTIC_HOST, else this host's name)")
	f.StringVar(&timeOverride, "time", "", "snapshot `time` as \"YYYY-MM-DD hh:mm:ss\" (default: now)")
	return cmd
}

// startCommand runs args with stdout piped; wait returns the command's
// failure (with its exit status) after stdout was read to the end.
func startCommand(ctx context.Context, args []string, stderr io.Writer) (io.Reader, func() error, error) {
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Stderr = stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := c.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	wait := func() error {
		if err := c.Wait(); err != nil {
			return fmt.Errorf("command %s failed: %w; no snapshot was saved", args[0], err)
		}
		return nil
	}
	return out, wait, nil
}

func (a *app) printBackupSummary(res *repo.BackupResult) error {
	sn := res.Snapshot
	var total uint64
	for _, n := range res.Sizes {
		total += n
	}
	if a.jsonOutput {
		return json.NewEncoder(a.stdout).Encode(map[string]any{
			"message_type":          "summary",
			"files_new":             len(res.Sizes),
			"files_changed":         0,
			"files_unmodified":      0,
			"dirs_new":              sn.Summary.DirsNew,
			"data_blobs":            res.Stats.DataBlobs,
			"tree_blobs":            res.Stats.TreeBlobs,
			"data_added":            res.Stats.DataAdded,
			"data_added_packed":     res.Stats.DataAddedPacked,
			"total_files_processed": len(res.Sizes),
			"total_bytes_processed": total,
			"total_duration":        sn.Summary.BackupEnd.Sub(sn.Summary.BackupStart).Seconds(),
			"backup_start":          sn.Summary.BackupStart,
			"backup_end":            sn.Summary.BackupEnd,
			"snapshot_id":           res.SnapshotID.String(),
		})
	}
	if a.quiet {
		return nil
	}
	d := sn.Summary.BackupEnd.Sub(sn.Summary.BackupStart)
	fmt.Fprintf(a.stdout, "processed %s in %s (%s/s)\n", bytesHuman(total), d.Round(time.Millisecond), bytesHuman(uint64(float64(total)/max(d.Seconds(), 0.001))))
	fmt.Fprintf(a.stdout, "added to the repository: %s (%s stored)\n", bytesHuman(res.Stats.DataAdded), bytesHuman(res.Stats.DataAddedPacked))
	fmt.Fprintf(a.stdout, "snapshot %s saved\n", res.SnapshotID.Str())
	return nil
}

func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
