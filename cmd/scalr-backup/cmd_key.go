package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repoenv"
)

func isNotFound(err error) bool {
	return errors.Is(err, repo.ErrNotFound) || errors.Is(err, repo.ErrBlobMissing)
}

func (a *app) keyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key list|add|remove",
		Short: "Manage the repository's keys (passwords)",
	}
	cmd.AddCommand(a.keyListCommand(), a.keyAddCommand(), a.keyRemoveCommand())
	return cmd
}

func (a *app) keyListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List key files",
		Example: "  scalr-backup key list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := r.ListKeys(ctx)
			if err != nil {
				return err
			}
			if a.jsonOutput {
				type keyJSON struct {
					Current  bool   `json:"current"`
					ID       string `json:"id"`
					UserName string `json:"userName"`
					HostName string `json:"hostName"`
					Created  string `json:"created"`
					// Damaged says why a damaged key file cannot be used.
					Damaged string `json:"damaged,omitempty"`
				}
				out := make([]keyJSON, len(keys))
				for i, k := range keys {
					if k.Damaged != nil {
						out[i] = keyJSON{Current: k.Current, ID: k.ID.String(), Damaged: k.Damaged.Error()}
						continue
					}
					out[i] = keyJSON{k.Current, k.ID.String(), k.File.Username, k.File.Hostname, k.File.Created.Local().Format(time.DateTime), ""}
				}
				return json.NewEncoder(a.stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, " \tID\tUser\tHost\tCreated")
			for _, k := range keys {
				cur := " "
				if k.Current {
					cur = "*"
				}
				if k.Damaged != nil {
					fmt.Fprintf(tw, "%s\t%s\t(damaged)\t\t\n", cur, k.ID.Str())
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, k.ID.Str(), k.File.Username, k.File.Hostname, k.File.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

func (a *app) keyAddCommand() *cobra.Command {
	var newPasswordFile, user, host string
	cmd := &cobra.Command{
		Use:     "add --new-password-file FILE",
		Short:   "Add a key (password) that opens the repository",
		Example: "  scalr-backup key add --new-password-file /run/secrets/second-password",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if newPasswordFile == "" {
				return errors.New("key add: give the new password with --new-password-file")
			}
			pw, err := repoenv.ReadPasswordFile(newPasswordFile)
			if err != nil {
				return fmt.Errorf("new password: %w", err)
			}
			if pw == "" {
				return errors.New("key add: the new password file is empty")
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			id, err := r.AddKey(ctx, pw, nil, user, host)
			if err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "saved new key as %s\n", id.Str())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&newPasswordFile, "new-password-file", "", "`file` holding the new password")
	cmd.Flags().StringVar(&user, "user", "", "user name recorded in the key (default: current user)")
	cmd.Flags().StringVar(&host, "host", "", "host name recorded in the key (default: this host)")
	return cmd
}

func (a *app) keyRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a key; the key in use cannot be removed",
		Example: "  scalr-backup key remove 1a2b3c4d",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			id, err := r.FindKeyID(ctx, args[0])
			if err != nil {
				return err
			}
			if err := r.RemoveKey(ctx, id); err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "removed key %s\n", id.Str())
			}
			return nil
		},
	}
}
