package pgstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/scalr-platform/scalr-backup/repo"
)

// DrillFormat identifies a drill record's layout.
const DrillFormat = "scalr-backup/pgstream-drill/v1"

// Drill record tags: every record has DrillTag, DrillOfTagPrefix followed
// by the container's name (drill-of:CONTAINER), and DrillPassedTag or
// DrillFailedTag. A record never carries the bare container name: that tag
// marks the container's backups, and `restic dump --tag CONTAINER latest
// /CONTAINER/DB.pgdump` takes the newest snapshot with it. (Records written
// before drill-of: existed do carry it; readers take both.) A Docker
// container name never holds ':' or ',', so drill-of:CONTAINER is no
// container's own tag, and restic's --tag takes it as it is.
const (
	DrillTag         = "drill"
	DrillOfTagPrefix = "drill-of:"
	DrillPassedTag   = "drill-passed"
	DrillFailedTag   = "drill-failed"
)

// DrillRecordPath is where a container's drill record lives in its
// snapshot: /drill/CONTAINER.json.
func DrillRecordPath(containerName string) string { return "/drill/" + containerName + ".json" }

// DrillOptions configure Drill.
type DrillOptions struct {
	// Snapshot is the backup to restore: "latest" (default) or an ID.
	Snapshot string
	// Image replaces the image of the throwaway container; by default it
	// is the live container's image, else the one the manifest names.
	Image string
	// ReadyTimeout bounds the wait for the throwaway Postgres to accept
	// connections (default 3 minutes).
	ReadyTimeout time.Duration
	// NoRecord skips saving the drill record snapshot.
	NoRecord bool
	// Hostname is the host the drill runs for: only its backups are
	// considered (any host's when empty), and it is the record's host.
	// ProgramVersion goes to the record's snapshot.
	Hostname       string
	ProgramVersion string
	// Warn receives notes that do not fail the drill.
	Warn func(string)
}

// DrillResult is a drill's outcome; it is also the record saved as
// /drill/CONTAINER.json in its own snapshot.
type DrillResult struct {
	Format          string          `json:"format"`
	Container       string          `json:"container"`
	Snapshot        string          `json:"snapshot"`
	SnapshotTime    time.Time       `json:"snapshot_time"`
	Image           string          `json:"image"`
	DrillContainer  string          `json:"drill_container"`
	Started         time.Time       `json:"started"`
	Finished        time.Time       `json:"finished"`
	DurationSeconds float64         `json:"duration_seconds"`
	Passed          bool            `json:"passed"`
	Error           string          `json:"error,omitempty"`
	Databases       []DrillDatabase `json:"databases"`
	Warnings        []string        `json:"warnings,omitempty"`

	// RecordID is the snapshot holding this record (zero with NoRecord or
	// when saving it failed, see RecordErr).
	RecordID  repo.ID `json:"-"`
	RecordErr error   `json:"-"`
}

// DrillDatabase is one database's table checks.
type DrillDatabase struct {
	Name   string       `json:"name"`
	Tables []DrillTable `json:"tables"`
}

// DrillTable is one table's counts (-1: table missing on that side).
type DrillTable struct {
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	Expected int64  `json:"expected"`
	Restored int64  `json:"restored"`
	OK       bool   `json:"ok"`
}

// Drill proves that a container's backup restores: it starts a throwaway
// container (named scalr-drill-CONTAINER-RANDOM, from the same image, with
// the same POSTGRES_* environment, without network, labelled
// scalr.backup=false), waits until its Postgres accepts connections,
// restores the backup into it with its globals (Restore with Globals and
// Into), and checks every table's row count against the manifest. The
// throwaway container and its volume are removed afterwards, also when the
// drill fails or ctx ends.
//
// The outcome is saved (unless NoRecord) as /drill/CONTAINER.json in a
// snapshot of its own tagged "drill", "drill-of:CONTAINER" and
// "drill-passed" or "drill-failed". Drill returns the result and, when the
// drill failed, an error too (wrapping ErrCountMismatch for a count that
// differs).
func Drill(ctx context.Context, d Docker, r *repo.Repository, containerName string, opts DrillOptions) (*DrillResult, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	res := &DrillResult{Format: DrillFormat, Container: containerName, Started: time.Now().UTC()}
	err := drill(ctx, d, r, containerName, opts, res, warn)
	res.Finished = time.Now().UTC()
	res.DurationSeconds = res.Finished.Sub(res.Started).Seconds()
	res.Passed = err == nil
	if err != nil {
		res.Error = err.Error()
	}
	if !opts.NoRecord && res.Snapshot != "" {
		res.RecordID, res.RecordErr = saveDrillRecord(context.WithoutCancel(ctx), r, res, opts)
		if res.RecordErr != nil && err == nil {
			err = fmt.Errorf("drill passed, but saving its record failed: %w", res.RecordErr)
		}
	}
	if err != nil {
		return res, fmt.Errorf("drill of container %s: %w", containerName, err)
	}
	return res, nil
}

func drill(ctx context.Context, d Docker, r *repo.Repository, containerName string, opts DrillOptions, res *DrillResult, warn func(string)) (err error) {
	sn, m, err := FindBackup(ctx, r, containerName, opts.Snapshot, opts.Hostname)
	if err != nil {
		return err
	}
	res.Snapshot, res.SnapshotTime = sn.ID.String(), sn.Time

	spec := drillSpec(ctx, d, containerName, m)
	if opts.Image != "" {
		spec.image = opts.Image
	}
	if spec.image == "" {
		return fmt.Errorf("no image known for container %s (give one)", containerName)
	}
	res.Image = spec.image
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	name := "scalr-drill-" + containerName + "-" + hex.EncodeToString(suffix[:])
	res.DrillContainer = name

	created, err := d.ContainerCreate(ctx, &container.Config{
		Image:      spec.image,
		Env:        spec.env,
		Cmd:        spec.cmd,
		StopSignal: "SIGINT",
		Labels:     map[string]string{LabelBackup: "false", LabelDrillOf: containerName},
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create the drill container %s from image %s: %w", name, spec.image, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		rerr := d.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if rerr != nil && !cerrdefs.IsNotFound(rerr) {
			rerr = fmt.Errorf("remove the drill container %s: %w", name, rerr)
			if err == nil {
				err = rerr
			} else {
				warn(rerr.Error())
			}
		}
	}()
	if err := d.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start the drill container %s: %w", name, err)
	}
	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	if err := waitReady(ctx, d, name, spec.user, timeout); err != nil {
		return err
	}
	rr, rerr := Restore(ctx, d, r, containerName, sn.ID.String(), RestoreOptions{Into: name, Host: opts.Hostname, Globals: true, DropPrevious: true})
	if rr != nil {
		res.Warnings = rr.Warnings
		for _, db := range rr.Databases {
			dd := DrillDatabase{Name: db.Name, Tables: []DrillTable{}}
			for _, t := range db.Tables {
				dd.Tables = append(dd.Tables, DrillTable{Schema: t.Schema, Name: t.Name, Expected: t.Expected, Restored: t.Restored, OK: t.OK()})
			}
			res.Databases = append(res.Databases, dd)
		}
	}
	return rerr
}

// drillEnv is how to start a container like the backed-up one.
type drillEnv struct {
	image string
	env   []string
	cmd   []string
	user  string
}

// drillSpec copies the live container's image and POSTGRES_* environment,
// or, without it, takes the manifest's image and user (with a random
// password: the drill container has no network).
func drillSpec(ctx context.Context, d Docker, containerName string, m *Manifest) drillEnv {
	var s drillEnv
	ins, err := d.ContainerInspect(ctx, containerName)
	if err == nil && ins.ContainerJSONBase != nil && ins.Config != nil {
		s.image = ins.Image // the exact image (ID)
		if s.image == "" {
			s.image = ins.Config.Image
		}
		for _, kv := range ins.Config.Env {
			if strings.HasPrefix(kv, "POSTGRES_") {
				s.env = append(s.env, kv)
			}
		}
		s.user = envMap(ins.Config.Env)["POSTGRES_USER"]
		if len(ins.Config.Cmd) > 0 && ins.Config.Cmd[0] != "postgres" {
			s.cmd = nil // the image's own command: we cannot tell how to add options
		} else {
			s.cmd = drillServerCmd
		}
	} else {
		s.image = m.ImageID
		if s.image == "" {
			s.image = m.Image
		}
		var pw [16]byte
		_, _ = rand.Read(pw[:])
		s.env = []string{"POSTGRES_USER=" + m.User, "POSTGRES_PASSWORD=" + hex.EncodeToString(pw[:])}
		s.user = m.User
		s.cmd = drillServerCmd
	}
	if s.user == "" {
		s.user = "postgres"
	}
	return s
}

// drillServerCmd runs the throwaway server without crash safety: nothing
// in it must survive.
var drillServerCmd = []string{"postgres", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"}

// waitReady waits until the container's final server accepts connections:
// the official image's entrypoint first runs a temporary server for its
// set-up with listen_addresses empty, which must not be mistaken for it.
func waitReady(ctx context.Context, d Docker, name, user string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ins, err := d.ContainerInspect(ctx, name)
		if err == nil && ins.ContainerJSONBase != nil && ins.State != nil && !ins.State.Running {
			return fmt.Errorf("%w: the drill container %s stopped before Postgres was ready (exit code %d%s)",
				ErrNotRunning, name, ins.State.ExitCode, tailSuffix(ins.State.Error))
		}
		out, _, perr := runPsql(ctx, d, name, user, "template1",
			strings.NewReader("SELECT current_setting('listen_addresses') <> '';\n"), true)
		if perr == nil && strings.TrimSpace(out) == "t" {
			return nil
		}
		if perr != nil {
			last = perr
			if errors.Is(perr, ErrToolMissing) {
				return perr
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("still running its set-up")
			}
			return fmt.Errorf("Postgres in the drill container %s not ready within %s: %v", name, timeout, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func saveDrillRecord(ctx context.Context, r *repo.Repository, res *DrillResult, opts DrillOptions) (repo.ID, error) {
	buf, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return repo.ID{}, err
	}
	status := DrillFailedTag
	if res.Passed {
		status = DrillPassedTag
	}
	br, err := r.BackupStream(ctx, repo.Stream{
		Name:   strings.TrimPrefix(DrillRecordPath(res.Container), "/"),
		Reader: bytes.NewReader(append(buf, '\n')),
	}, repo.BackupOptions{
		Tags:     []string{DrillTag, DrillOfTagPrefix + res.Container, status},
		Hostname: opts.Hostname, ProgramVersion: opts.ProgramVersion,
	})
	if err != nil {
		return repo.ID{}, err
	}
	return br.SnapshotID, nil
}
