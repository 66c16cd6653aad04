// Package pgnightly runs the nightly service (package nightly) on the
// Postgres containers of a Docker host (package pgstream): it discovers
// the containers, backs each up with pg_dump and runs the restore drill.
// nightly and pgstream stay independent of each other; this is the one
// package that knows both, so that a program needs only a few lines to
// run a pass:
//
//	cfg, _ := nightly.LoadConfig(os.Getenv)
//	pg := pgnightly.New(cfg, pgnightly.Options{Logger: log})
//	defer pg.Close()
//	rep := pg.Service(settings.Open, nil).RunPass(ctx)
package pgnightly

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/docker/docker/client"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
)

// Options tune Wiring; the zero value works.
type Options struct {
	// Getenv reads DOCKER_HOST and the other Docker client settings; nil
	// means os.Getenv.
	Getenv func(string) string
	// Logger receives discovery warnings and the "backup progress"
	// events; nil means slog.Default().
	Logger *slog.Logger
	// ProgressEvery is the interval of the "backup progress" events,
	// which are logged even when nothing moved (a hung dump is not
	// silent); 0 means every 30 seconds, a negative value none.
	ProgressEvery time.Duration
	// ProgramVersion is recorded in snapshots; empty: "scalr-backup".
	ProgramVersion string
}

// Wiring is nightly's Discoverer, BackupFunc and DrillFunc on Postgres
// containers. The Docker engine is connected on first use and again after
// a failed connect, so a daemon started before the engine, or across an
// engine restart, recovers by itself. It is safe for concurrent use.
type Wiring struct {
	cfg  nightly.Config
	opts Options

	mu     sync.Mutex
	docker *client.Client
}

// New returns the wiring for cfg: its container patterns, databases and
// host identity.
func New(cfg nightly.Config, opts Options) *Wiring {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ProgressEvery == 0 {
		opts.ProgressEvery = 30 * time.Second
	}
	if opts.ProgramVersion == "" {
		opts.ProgramVersion = "scalr-backup"
	}
	return &Wiring{cfg: cfg, opts: opts}
}

// Service returns a nightly service that opens the repository with open
// for each pass and runs on w; m may be nil.
func (w *Wiring) Service(open func(context.Context) (*repo.Repository, error), m *nightly.Metrics) *nightly.Service {
	return &nightly.Service{
		Config: w.cfg, Open: open,
		Discoverer: w, Backup: w.Backup, Drill: w.Drill,
		Metrics: m, Logger: w.opts.Logger,
	}
}

func (w *Wiring) client(ctx context.Context) (pgstream.Docker, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.docker != nil {
		return w.docker, nil
	}
	d, err := pgstream.Connect(ctx, w.opts.Getenv)
	if err != nil {
		return nil, err
	}
	w.docker = d
	return d, nil
}

// Close closes the Docker connection, if any; a later call connects again.
func (w *Wiring) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.docker == nil {
		return nil
	}
	err := w.docker.Close()
	w.docker = nil
	return err
}

func (w *Wiring) warn(s string) { w.opts.Logger.Warn(s) }

// Discover lists the Postgres containers to back up (nightly.Discoverer):
// those matching the configured patterns, each with its databases, and
// any container found but unusable with its Problem set, so that the pass
// counts it as a failure rather than passing over it.
func (w *Wiring) Discover(ctx context.Context) ([]nightly.Target, error) {
	d, err := w.client(ctx)
	if err != nil {
		return nil, err
	}
	found, err := pgstream.Discover(ctx, d, pgstream.Options{Patterns: w.cfg.Patterns, Databases: w.cfg.Databases, Warn: w.warn})
	if err != nil {
		return nil, err
	}
	out := make([]nightly.Target, len(found))
	for i, t := range found {
		out[i] = nightly.Target{Name: t.Container, Detail: t, Problem: t.Problem}
	}
	return out, nil
}

// Backup dumps one discovered container into a snapshot (a
// nightly.BackupFunc), logging its progress.
func (w *Wiring) Backup(ctx context.Context, r *repo.Repository, t nightly.Target) (nightly.BackupResult, error) {
	pt, ok := t.Detail.(pgstream.Target)
	if !ok {
		return nightly.BackupResult{}, fmt.Errorf("container %s: not found by discovery", t.Name)
	}
	d, err := w.client(ctx)
	if err != nil {
		return nightly.BackupResult{}, err
	}
	pl := nightly.StartProgressLog(w.opts.Logger, t.Name, w.opts.ProgressEvery)
	defer pl.Stop()
	res, err := pgstream.BackupContainer(ctx, d, r, pt, pgstream.BackupOptions{
		Hostname: w.cfg.Host, ProgramVersion: w.opts.ProgramVersion,
		Progress: func(p repo.BackupProgress) { pl.Update(p.File, p.TotalBytesRead, p.Stats.DataAdded) },
	})
	if err != nil {
		return nightly.BackupResult{}, err
	}
	out := nightly.BackupResult{SnapshotID: res.SnapshotID, BytesAdded: res.Stats.DataAdded, BytesStored: res.Stats.DataAddedPacked}
	if res.Snapshot != nil && res.Snapshot.Summary != nil {
		out.BytesRead = res.Snapshot.Summary.TotalBytesProcessed
	}
	return out, nil
}

// Drill restores a container's latest snapshot into a scratch container
// and checks it (a nightly.DrillFunc).
func (w *Wiring) Drill(ctx context.Context, r *repo.Repository, t nightly.Target) (nightly.DrillResult, error) {
	d, err := w.client(ctx)
	if err != nil {
		return nightly.DrillResult{}, err
	}
	res, err := pgstream.Drill(ctx, d, r, t.Name, pgstream.DrillOptions{
		Hostname: w.cfg.Host, ProgramVersion: w.opts.ProgramVersion, Warn: w.warn,
	})
	if res == nil {
		return nightly.DrillResult{}, err
	}
	return nightly.DrillResult{Snapshot: res.Snapshot, RecordID: res.RecordID}, err
}
