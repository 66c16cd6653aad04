package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/pgstream"
)

func (a *app) previousCommand() *cobra.Command {
	var (
		yes bool
		db  string
	)
	cmd := &cobra.Command{
		Use:   "previous CONTAINER [drop NAME | swap-back NAME]",
		Short: "List, drop or swap back the databases restores replaced",
		Long: `A restore never drops the database it replaces: it renames it
NAME__replaced_TIMESTAMP and keeps it. This command lists those databases in
a running container with their sizes, drops one ('drop NAME'), or puts one
back in place ('swap-back NAME'): the same one-transaction swap as a restore,
so the database it replaces in turn is kept as NAME__replaced_NOW.

drop and swap-back ask for confirmation on a terminal; without a terminal
they refuse unless --yes.`,
		Example: `  scalr-backup previous scalr-app-db
  scalr-backup previous scalr-app-db swap-back app__replaced_20261127T031200Z
  scalr-backup previous scalr-app-db drop app__replaced_20261127T031200Z --yes`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1:
				return nil
			case len(args) == 3 && (args[1] == "drop" || args[1] == "swap-back"):
				return nil
			}
			return fmt.Errorf("want CONTAINER, or CONTAINER drop NAME, or CONTAINER swap-back NAME")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			d, err := a.connectDocker(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			container := args[0]
			if len(args) == 1 {
				list, err := pgstream.ListReplaced(ctx, d, container)
				if err != nil {
					return err
				}
				if a.jsonOutput {
					if list == nil {
						list = []pgstream.ReplacedDatabase{}
					}
					return json.NewEncoder(a.stdout).Encode(list)
				}
				if len(list) == 0 {
					fmt.Fprintf(a.stdout, "container %s keeps no replaced database\n", container)
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tWAS\tREPLACED\tSIZE")
				for _, rd := range list {
					of := rd.Of
					if of == "" {
						of = "(name cut)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", rd.Name, of, rd.Replaced.Local().Format("2006-01-02 15:04:05"), bytesHuman(uint64(rd.Bytes)))
				}
				return tw.Flush()
			}
			verb, name := args[1], args[2]
			if !yes {
				if !a.stdinIsTerminal() {
					return fmt.Errorf("refusing to %s %s without --yes: standard input is not a terminal, so nobody can confirm; nothing was changed", verb, name)
				}
				fmt.Fprintf(a.stderr, "%s database %s in container %s? Type yes: ", verb, name, container)
				line, _ := bufio.NewReader(a.stdin).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return errNotConfirmed
				}
			}
			if verb == "drop" {
				if err := pgstream.DropReplaced(ctx, d, container, name); err != nil {
					return err
				}
				if a.jsonOutput {
					return a.emitJSON(previousJSON{Container: container, Action: verb, Database: name, Dropped: name})
				}
				if !a.quiet {
					fmt.Fprintf(a.stdout, "dropped database %s in container %s\n", name, container)
				}
				return nil
			}
			live, kept, err := pgstream.SwapBack(ctx, d, container, name, db)
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return a.emitJSON(previousJSON{Container: container, Action: verb, Database: name, Live: live, Kept: kept})
			}
			if !a.quiet {
				fmt.Fprintf(a.stdout, "database %s is back as %s in container %s", name, live, container)
				if kept != "" {
					fmt.Fprintf(a.stdout, "; the database it replaced is kept as %s", kept)
				}
				fmt.Fprintln(a.stdout)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&db, "db", "", "with swap-back: the `database` it goes back to (default: the one its name says)")
	return cmd
}

// previousJSON is what previous drop and swap-back print with --json.
type previousJSON struct {
	Container string `json:"container"`
	Action    string `json:"action"` // drop or swap-back
	Database  string `json:"database"`
	// Dropped is the database dropped; Live the name the swapped-back one
	// now has, Kept the one it replaced, kept under that name.
	Dropped string `json:"dropped,omitempty"`
	Live    string `json:"live,omitempty"`
	Kept    string `json:"kept,omitempty"`
}
