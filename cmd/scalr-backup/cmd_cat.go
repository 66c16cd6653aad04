package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) catCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cat config|snapshot ID|index ID|key ID|lock ID|blob ID|pack ID",
		Short: "Print a repository object",
		Long: `Print a repository object: config, snapshot, index and lock files decrypted
as JSON; key files as stored (plain JSON); a blob's plaintext (data or tree);
a pack's stored bytes. IDs may be shortened when unique (not for blobs).`,
		Example: `  scalr-backup cat config
  scalr-backup cat snapshot 1a2b3c4d
  scalr-backup cat blob $(scalr-backup cat snapshot latest | jq -r .tree)`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kind := args[0]
			if kind != "config" && len(args) != 2 {
				return fmt.Errorf("cat %s needs an ID", kind)
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			ft := map[string]backend.FileType{"snapshot": backend.SnapshotFile, "index": backend.IndexFile, "key": backend.KeyFile, "lock": backend.LockFile, "pack": backend.PackFile}
			switch kind {
			case "config":
				return a.printJSON(r.Config())
			case "snapshot":
				if args[1] == "latest" {
					sn, err := r.FindSnapshot(ctx, "latest", repo.SnapshotFilter{})
					if err != nil {
						return err
					}
					return a.printJSON(sn)
				}
				fallthrough
			case "index", "lock":
				id, err := r.FindFile(ctx, ft[kind], args[1])
				if err != nil {
					return err
				}
				buf, err := r.LoadRaw(ctx, ft[kind], id)
				if err != nil {
					return err
				}
				return a.printRawJSON(buf)
			case "key":
				id, err := r.FindFile(ctx, backend.KeyFile, args[1])
				if err != nil {
					return err
				}
				buf, err := backend.LoadAll(ctx, r.Backend(), backend.Handle{Type: backend.KeyFile, Name: id.String()})
				if err != nil {
					return err
				}
				return a.printRawJSON(buf)
			case "pack":
				id, err := r.FindFile(ctx, backend.PackFile, args[1])
				if err != nil {
					return err
				}
				rd, err := r.Backend().Load(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, 0, 0)
				if err != nil {
					return err
				}
				defer rd.Close()
				_, err = io.Copy(a.stdout, rd)
				return err
			case "blob":
				id, err := repo.ParseID(args[1])
				if err != nil {
					return err
				}
				for _, t := range []repo.BlobType{repo.DataBlob, repo.TreeBlob} {
					buf, err := r.LoadBlob(ctx, repo.BlobHandle{ID: id, Type: t})
					if err == nil {
						_, err = a.stdout.Write(buf)
						return err
					}
					if !isNotFound(err) {
						return err
					}
				}
				return fmt.Errorf("blob %s is not in the index", id.Str())
			}
			return fmt.Errorf("cat: unknown object type %q", kind)
		},
	}
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// emitJSON prints a --json result: one object (or array) on one line, as
// restic prints its JSON messages.
func (a *app) emitJSON(v any) error { return json.NewEncoder(a.stdout).Encode(v) }

// printRawJSON prints stored JSON as it is, with a final newline.
func (a *app) printRawJSON(buf []byte) error {
	if _, err := a.stdout.Write(buf); err != nil {
		return err
	}
	if len(buf) == 0 || buf[len(buf)-1] != '\n' {
		_, err := fmt.Fprintln(a.stdout)
		return err
	}
	return nil
}
