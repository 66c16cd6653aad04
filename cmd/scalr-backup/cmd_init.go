package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

func (a *app) initCommand() *cobra.Command {
	var version string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Example: `  RESTIC_REPOSITORY=/srv/backup RESTIC_PASSWORD_FILE=/run/secrets/restic scalr-backup init
  scalr-backup -r s3:https://ACCOUNT.r2.cloudflarestorage.com/backups init --repository-version 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			v := uint(repo.MaxVersion)
			switch version {
			case "1":
				v = 1
			case "2", "latest", "stable", "":
			default:
				return fmt.Errorf("--repository-version %q: want 1, 2, stable or latest", version)
			}
			opts, err := a.repoOptions()
			if err != nil {
				return err
			}
			be, err := a.openBackend(ctx, true)
			if err != nil {
				return err
			}
			pw, err := a.password(ctx, "enter password for new repository: ")
			if err != nil {
				return err
			}
			r, err := repo.Init(ctx, be, pw, repo.InitOptions{Version: v}, opts)
			if err != nil {
				return err
			}
			defer r.Close()
			if a.jsonOutput {
				return json.NewEncoder(a.stdout).Encode(map[string]any{
					"message_type": "initialized", "id": r.Config().ID, "repository": be.Location(),
				})
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "created restic repository %s at %s (format version %d)\n", r.Config().ID[:10], be.Location(), r.Config().Version)
				fmt.Fprintln(a.stdout, "Losing the password means the data in the repository is irrecoverably lost.")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "repository-version", "stable", "repository format `version`: 1, 2, stable (=2) or latest (=2)")
	return cmd
}
