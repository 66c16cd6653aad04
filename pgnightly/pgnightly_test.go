package pgnightly

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

// TestDiscoverWithoutEngine: an engine that is not there is an error
// naming it, and each call connects again (a daemon started before the
// engine recovers by itself).
func TestDiscoverWithoutEngine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	env := map[string]string{"DOCKER_HOST": "tcp://" + addr}
	w := New(nightly.Config{Host: "h"}, Options{Getenv: func(k string) string { return env[k] }})
	defer w.Close()
	for i := 0; i < 2; i++ {
		_, err := w.Discover(context.Background())
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Fatalf("call %d: %v; want an error naming %s", i, err, addr)
		}
		if w.docker != nil {
			t.Fatalf("call %d: a failed connection was kept", i)
		}
	}
}

// TestBackupUndiscovered: a target that discovery did not produce is
// refused by name, before any Docker connection.
func TestBackupUndiscovered(t *testing.T) {
	w := New(nightly.Config{}, Options{Getenv: func(string) string { return "tcp://127.0.0.1:1" }})
	_, err := w.Backup(context.Background(), repotest.New(t), nightly.Target{Name: "scalr-x-db"})
	if err == nil || !strings.Contains(err.Error(), "scalr-x-db") {
		t.Fatalf("%v; want an error naming the container", err)
	}
}

func TestServiceWiring(t *testing.T) {
	w := New(nightly.Config{Host: "h"}, Options{})
	s := w.Service(nil, nil)
	if s.Discoverer != w || s.Backup == nil || s.Drill == nil || s.Logger == nil || s.Config.Host != "h" {
		t.Fatalf("service not wired: %+v", s)
	}
}

// TestDrillConventions: pgstream writes drill records, nightly forgets and
// reports them; each keeps its own constants (neither imports the other),
// so this package, which knows both, holds them equal.
func TestDrillConventions(t *testing.T) {
	pairs := [][2]string{
		{pgstream.DrillTag, nightly.DrillTag},
		{pgstream.DrillOfTagPrefix, nightly.DrillOfTagPrefix},
		{pgstream.DrillPassedTag, nightly.DrillPassedTag},
		{pgstream.DrillFailedTag, nightly.DrillFailedTag},
	}
	for _, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("pgstream writes %q where nightly reads %q", p[0], p[1])
		}
	}
	// A drill record as pgstream writes it is no container backup to
	// nightly (forget must keep its own retention for records).
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	rec := &repo.Snapshot{Paths: []string{pgstream.DrillRecordPath("scalr-app-db")}, Time: now, Hostname: "h",
		Tags: []string{pgstream.DrillTag, pgstream.DrillOfTagPrefix + "scalr-app-db", pgstream.DrillPassedTag}}
	if name, ok := nightly.ContainerOf(rec); ok {
		t.Errorf("nightly takes a drill record for a backup of %s", name)
	}
	backup := &repo.Snapshot{Paths: []string{"/scalr-app-db"}, Tags: []string{"scalr-app-db"}, Time: now.Add(-time.Hour), Hostname: "h"}
	if name, ok := nightly.ContainerOf(backup); !ok || name != "scalr-app-db" {
		t.Errorf("a backup: %q %v", name, ok)
	}
	// And nightly's inventory reads the record as the container's drill.
	inv := nightly.Inventory([]*repo.Snapshot{backup, rec}, "h")
	if len(inv) != 1 || !inv[0].LastDrill.Equal(now) || !inv[0].LastDrillPassed || inv[0].Snapshots != 1 {
		t.Errorf("inventory %+v; want one container, one backup, a passed drill at %s", inv, now)
	}
}
