package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) dumpCommand() *cobra.Command {
	var filter repo.SnapshotFilter
	cmd := &cobra.Command{
		Use:   "dump [flags] SNAPSHOT|latest FILE",
		Short: "Write one file of a snapshot to standard output",
		Long: `Write one file of a snapshot to standard output, verifying every blob
(MAC and SHA-256) before its bytes are written. Nothing is staged on disk.
Progress goes to standard error on a terminal, or without one at the rate
RESTIC_PROGRESS_FPS sets.`,
		Example: `  scalr-backup dump latest /app.pgdump | pg_restore -d app
  scalr-backup dump --tag scalr-app-db latest /scalr-app-db/app.pgdump > /dev/null`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			// restic's dump holds a non-exclusive lock: a prune meanwhile
			// waits or fails instead of deleting what is being read. It is
			// taken while the snapshot is looked up: each is a few
			// requests in turn, and the dump's first byte waits for both.
			type locked struct {
				lock *repo.Lock
				err  error
			}
			lockc := make(chan locked, 1)
			go func() {
				l, err := r.Lock(ctx, false)
				lockc <- locked{l, err}
			}()
			sn, err := r.FindSnapshot(ctx, args[0], filter)
			lk := <-lockc
			if lk.err == nil {
				defer lk.lock.Unlock(context.WithoutCancel(ctx))
			}
			if err != nil {
				return err
			}
			if lk.err != nil {
				return lk.err
			}
			node, err := r.FindNode(ctx, sn, args[1])
			if err != nil {
				return err
			}
			if node.Type != repo.NodeFile {
				return fmt.Errorf("%s in snapshot %s is a %s: only files can be dumped", args[1], sn.ID.Str(), node.Type)
			}
			fr, err := r.OpenFile(ctx, node)
			if err != nil {
				return err
			}
			defer fr.Close()
			growPipe(a.stdout)
			p := a.newProgress()
			out := &countingWriter{w: a.stdout, total: int64(node.Size), start: time.Now(), p: p, what: "dumped"}
			_, err = io.Copy(out, fr)
			out.p.set(fmt.Sprintf("%s %s dumped %s / %s", elapsed(out.start), percent(float64(out.n), float64(out.total)),
				bytesHuman(uint64(out.n)), bytesHuman(uint64(out.total))), true)
			p.done()
			if err != nil {
				return fmt.Errorf("dump %s from snapshot %s: %w", args[1], sn.ID.Str(), err)
			}
			return nil
		},
	}
	addFilterFlags(cmd, &filter)
	return cmd
}
