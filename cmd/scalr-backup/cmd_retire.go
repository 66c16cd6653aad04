package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
)

// retireRecord is the content of a retirement record,
// /retired/CONTAINER.json.
type retireRecord struct {
	Container string    `json:"container"`
	Host      string    `json:"host"`
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason,omitempty"`
	Program   string    `json:"program"`
}

// retiredRow is one line of retire --list.
type retiredRow struct {
	Container string    `json:"container"`
	Retired   time.Time `json:"retired"`
	Newest    time.Time `json:"newest_backup,omitzero"`
	// Active is false when a backup newer than the record brought the
	// container back.
	Active bool `json:"active"`
}

func (a *app) retireCommand() *cobra.Command {
	var (
		host   string
		reason string
		undo   bool
		list   bool
	)
	cmd := &cobra.Command{
		Use:   "retire CONTAINER...",
		Short: "Record that a database container was removed on purpose, so its missing backups no longer alert",
		Long: `The nightly service expects every container this host has backed up (its
snapshots in the repository) to be backed up again: one that disappears
(removed, renamed) fails every pass by name, and once its newest backup is
older than SCALR_BACKUP_STALE_AFTER it is stale (alert, /healthz 503). An
app removed on purpose is retired with this command, never by silence.

retire saves a small record in the repository: a snapshot whose one path is
/retired/CONTAINER.json, tagged retired and retired-of:CONTAINER, made on
this host (--host, else SCALR_BACKUP_HOST, else RESTIC_HOST, else the host
name, as run and daemon use). Its backups are kept as they are (forget's
retention still applies). A backup of the container made after the record
(the app deployed again) brings it back into the expected set by itself.

--undo removes the container's retirement records; --list shows them.`,
		Example: `  scalr-backup retire scalr-oldapp-db --reason "app removed in ticket 123"
  scalr-backup retire --list
  scalr-backup retire --undo scalr-oldapp-db`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if list != (len(args) == 0) {
				if list {
					return errors.New("--list takes no CONTAINER")
				}
				return errors.New("give the CONTAINER names to retire (or --list)")
			}
			for _, name := range args {
				if name == "" || strings.ContainsAny(name, "/:, \t\n") {
					return fmt.Errorf("%q is not a container name", name)
				}
			}
			h, err := a.hostIdentity(host)
			if err != nil {
				return err
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			snaps, err := r.ListSnapshots(ctx)
			if err != nil {
				return err
			}
			switch {
			case list:
				return a.retireList(h, snaps)
			case undo:
				return a.retireUndo(ctx, r, h, snaps, args)
			}
			return a.retire(ctx, r, h, snaps, args, reason)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&host, "host", "H", "", "`hostname` whose container it is (default: $SCALR_BACKUP_HOST, else $RESTIC_HOST, else this host's name)")
	f.StringVar(&reason, "reason", "", "why, kept in the record (`text`)")
	f.BoolVar(&undo, "undo", false, "remove the containers' retirement records instead")
	f.BoolVar(&list, "list", false, "list this host's retired containers")
	return cmd
}

// retireJSON is what retire and retire --undo print with --json.
type retireJSON struct {
	Action     string   `json:"action"` // retire or undo
	Host       string   `json:"host"`
	Containers []string `json:"containers"`
	// Records are the records saved (retire), RecordsRemoved the IDs of
	// those removed (undo).
	Records        []retiredRecordJSON `json:"records,omitempty"`
	RecordsRemoved []string            `json:"records_removed,omitempty"`
}

type retiredRecordJSON struct {
	Container string `json:"container"`
	RecordID  string `json:"record_id"`
}

// retireList prints host h's retired containers.
func (a *app) retireList(h string, snaps []*repo.Snapshot) error {
	rows := []retiredRow{}
	for _, st := range nightly.Inventory(snaps, h) {
		if !st.Retired.IsZero() {
			rows = append(rows, retiredRow{Container: st.Container, Retired: st.Retired, Newest: st.Newest, Active: st.IsRetired()})
		}
	}
	if a.jsonOutput {
		return a.emitJSON(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.stdout, "no container of host %s is retired\n", h)
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tRETIRED\tNEWEST BACKUP\tSTATE")
	for _, row := range rows {
		state, newest := "retired", "-"
		if !row.Active {
			state = "backed up since: expected again"
		}
		if !row.Newest.IsZero() {
			newest = row.Newest.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Container, row.Retired.UTC().Format(time.RFC3339), newest, state)
	}
	return tw.Flush()
}

// retireUndo removes host h's retirement records of the containers.
func (a *app) retireUndo(ctx context.Context, r *repo.Repository, h string, snaps []*repo.Snapshot, containers []string) error {
	var ids []repo.ID
	for _, sn := range snaps {
		if name, ok := nightly.RetiredOf(sn); ok && sn.Hostname == h && slices.Contains(containers, name) {
			ids = append(ids, sn.ID)
		}
	}
	if len(ids) == 0 {
		return fmt.Errorf("no retirement record of %s on host %s", strings.Join(containers, ", "), h)
	}
	removed, err := r.RemoveSnapshots(ctx, ids)
	if err != nil {
		return fmt.Errorf("remove the retirement records: %w", err)
	}
	if a.jsonOutput {
		out := retireJSON{Host: h, Containers: containers, Action: "undo", RecordsRemoved: []string{}}
		for _, id := range removed {
			out.RecordsRemoved = append(out.RecordsRemoved, id.String())
		}
		return a.emitJSON(out)
	}
	if !a.quiet {
		fmt.Fprintf(a.stdout, "removed %d retirement record(s) of %s on host %s: expected again\n", len(removed), strings.Join(containers, ", "), h)
	}
	return nil
}

// retire saves a retirement record for each container, on host h.
func (a *app) retire(ctx context.Context, r *repo.Repository, h string, snaps []*repo.Snapshot, containers []string, reason string) error {
	inv := map[string]nightly.ContainerState{}
	for _, st := range nightly.Inventory(snaps, h) {
		inv[st.Container] = st
	}
	out := retireJSON{Host: h, Containers: containers, Action: "retire", Records: []retiredRecordJSON{}}
	for _, name := range containers {
		if st, known := inv[name]; !known || st.Newest.IsZero() {
			a.warnf("host %s has no backup of container %s in this repository: retiring it anyway", h, name)
		}
		rec := retireRecord{Container: name, Host: h, Time: time.Now().UTC(), Reason: reason, Program: "scalr-backup " + version()}
		buf, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		res, err := r.BackupStream(ctx, repo.Stream{
			Name:   strings.TrimPrefix(nightly.RetiredRecordPath(name), "/"),
			Reader: strings.NewReader(string(buf) + "\n"),
		}, repo.BackupOptions{
			Tags:     []string{nightly.RetiredTag, nightly.RetiredOfTag(name)},
			Hostname: h, Time: rec.Time, ProgramVersion: rec.Program,
		})
		if err != nil {
			return fmt.Errorf("retire %s: %w", name, err)
		}
		out.Records = append(out.Records, retiredRecordJSON{Container: name, RecordID: res.SnapshotID.String()})
		if !a.quiet && !a.jsonOutput {
			fmt.Fprintf(a.stdout, "retired %s on host %s (record %s): no alert for its missing backups until it is backed up again\n",
				name, h, res.SnapshotID.Str())
		}
	}
	if a.jsonOutput {
		return a.emitJSON(out)
	}
	return nil
}
