package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
)

// TestRetireCommand: retire records a container's retirement for this
// host, a pass then neither misses it nor alerts for it; --list shows it;
// --undo brings it back (the pass names it missing again).
func TestRetireCommand(t *testing.T) {
	env := nightlyEnv(t)
	ctx := context.Background()
	// The host backed up two containers; one of them is gone now.
	fw := &fakeWiring{names: []string{"scalr-app-db", "scalr-old-db"}}
	a, _, _ := nightlyApp(env)
	if err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger()); err != nil {
		t.Fatal(err)
	}
	fw.names = []string{"scalr-app-db"}
	a, out, _ := nightlyApp(env)
	err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger())
	if err == nil || !strings.Contains(err.Error(), "1 of 2 container backups failed: scalr-old-db") ||
		!strings.Contains(out.String(), "scalr-backup retire scalr-old-db") {
		t.Fatalf("pass without the old container: %v\n%s", err, out)
	}

	res := runCLI(t, env, nil, "retire", "scalr-old-db", "--reason", "app removed")
	if res.code != 0 || !strings.Contains(res.stdout, "retired scalr-old-db on host test-host") {
		t.Fatalf("retire: %+v", res)
	}
	a, out, _ = nightlyApp(env)
	if err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger()); err != nil {
		t.Fatalf("pass after retire: %v\n%s", err, out)
	}
	// The record: one path, the tags, this host; forget left it alone.
	r, err := repo.Open(ctx, local.New(env["RESTIC_REPOSITORY"]), nightlyTestPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := r.ListSnapshots(ctx)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for _, sn := range snaps {
		if name, ok := nightly.RetiredOf(sn); ok {
			records++
			if name != "scalr-old-db" || sn.Hostname != "test-host" || sn.Paths[0] != "/retired/scalr-old-db.json" {
				t.Errorf("record %+v", sn)
			}
		}
	}
	if records != 1 {
		t.Errorf("%d retirement records", records)
	}

	res = runCLI(t, env, nil, "--json", "retire", "--list")
	var rows []retiredRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil || len(rows) != 1 || rows[0].Container != "scalr-old-db" || !rows[0].Active {
		t.Errorf("retire --list --json: %v %s", err, res.stdout)
	}
	if res := runCLI(t, env, nil, "retire", "--list"); !strings.Contains(res.stdout, "scalr-old-db") || !strings.Contains(res.stdout, "retired") {
		t.Errorf("retire --list: %+v", res)
	}
	// Another host has nothing retired.
	if res := runCLI(t, env, nil, "retire", "--list", "--host", "other"); !strings.Contains(res.stdout, "no container of host other is retired") {
		t.Errorf("retire --list --host other: %+v", res)
	}
	// A container never backed up is retired with a warning.
	if res := runCLI(t, env, nil, "retire", "scalr-never-db"); res.code != 0 || !strings.Contains(res.stderr, "has no backup of container scalr-never-db") {
		t.Errorf("retire of an unknown container: %+v", res)
	}
	for _, bad := range [][]string{{"retire"}, {"retire", "--list", "x"}, {"retire", "a/b"}} {
		if res := runCLI(t, env, nil, bad...); res.code == 0 {
			t.Errorf("%v accepted", bad)
		}
	}

	res = runCLI(t, env, nil, "retire", "--undo", "scalr-old-db")
	if res.code != 0 || !strings.Contains(res.stdout, "removed 1 retirement record") {
		t.Fatalf("retire --undo: %+v", res)
	}
	a, _, _ = nightlyApp(env)
	if err := a.nightlyRun(ctx, mustConfig(t, env), fw.wiring(), quietLogger()); err == nil || !strings.Contains(err.Error(), "scalr-old-db") {
		t.Errorf("after --undo the pass does not miss the container again: %v", err)
	}
	if res := runCLI(t, env, nil, "retire", "--undo", "scalr-old-db"); res.code == 0 {
		t.Error("a second --undo found records")
	}
}
