package main

// One host identity for every command, and the drill record's tags as
// pgstream writes them and nightly reads them. drill_dump_e2e_test.go runs
// the same through the real binary, Docker and restic.

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
)

// The CLI's hostIdentity (backup, pg-backup, drill) and nightly.LoadConfig
// (run, daemon) give the same host, or both refuse, for the same
// environment; nightlyConfig with --host gives what hostIdentity gives.
func TestHostIdentityAgreesWithNightly(t *testing.T) {
	osName, err := os.Hostname()
	if err != nil || osName == "" {
		t.Skipf("no OS host name: %v", err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string // "": refused
	}{
		{map[string]string{}, osName},
		{map[string]string{"SCALR_BACKUP_HOST": "scalr-host"}, "scalr-host"},
		{map[string]string{"RESTIC_HOST": "restic-host"}, "restic-host"},
		{map[string]string{"SCALR_BACKUP_HOST": "scalr-host", "RESTIC_HOST": "restic-host"}, "scalr-host"},
		{map[string]string{"SCALR_BACKUP_HOST": "", "RESTIC_HOST": "restic-host"}, "restic-host"},
		{map[string]string{"SCALR_BACKUP_HOST": "ok", "RESTIC_HOST": "not ok"}, "ok"},
		{map[string]string{"SCALR_BACKUP_HOST": "two words"}, ""},
		{map[string]string{"SCALR_BACKUP_HOST": "prod-1 "}, ""},
		{map[string]string{"SCALR_BACKUP_HOST": " "}, ""},
		{map[string]string{"RESTIC_HOST": "tab\there"}, ""},
		{map[string]string{"RESTIC_HOST": "cr\r"}, ""},
	} {
		env := tc.env
		a, _, _ := nightlyApp(env)
		cli, cliErr := a.hostIdentity("")
		cfg, cfgErr := nightly.LoadConfig(a.getenv)
		if (cliErr == nil) != (cfgErr == nil) || (cliErr == nil && cli != cfg.Host) {
			t.Errorf("%q: CLI %q (%v), nightly %q (%v)", env, cli, cliErr, cfg.Host, cfgErr)
			continue
		}
		if cli != tc.want {
			t.Errorf("%q: host %q (%v), want %q", env, cli, cliErr, tc.want)
		}
		if cliErr != nil {
			if _, err := a.nightlyConfig(&nightlyFlags{}); err == nil {
				t.Errorf("%q: run/daemon accept what the CLI refuses (%v)", env, cliErr)
			}
			continue
		}
		for _, flag := range []string{"", "flag-host"} {
			got, err := a.nightlyConfig(&nightlyFlags{host: flag})
			want, _ := a.hostIdentity(flag)
			if err != nil || got.Host != want || got.PassOptions().Host != want || got.Alerter().Host != want {
				t.Errorf("%q, --host %q: run/daemon host %q (%v), CLI %q", env, flag, got.Host, err, want)
			}
		}
	}
}

// backup --stdin records the host identity: --host, else
// SCALR_BACKUP_HOST, else RESTIC_HOST (restic's own default).
func TestBackupRecordsHostIdentity(t *testing.T) {
	base := newRepoEnv(t, 2)
	for i, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"SCALR_BACKUP_HOST": "scalr-host", "RESTIC_HOST": "restic-host"}, nil, "scalr-host"},
		{map[string]string{"RESTIC_HOST": "restic-host"}, nil, "restic-host"},
		{map[string]string{"SCALR_BACKUP_HOST": "scalr-host", "RESTIC_HOST": "restic-host"}, []string{"--host", "flag-host"}, "flag-host"},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range tc.env {
			env[k] = v
		}
		tag := "case-" + string(rune('a'+i))
		id := backupJSON(t, env, randomBytes(int64(i), 1000), append([]string{"--stdin-filename", "x", "--tag", tag}, tc.args...)...)
		res := runCLI(t, env, nil, "snapshots", "--json", "--tag", tag)
		var list []snapshotJSON
		if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list) != 1 || list[0].ID != id {
			t.Fatalf("%s: snapshots %v %s %s", tag, err, res.stdout, res.stderr)
		}
		if list[0].Hostname != tc.want {
			t.Errorf("%s (%q %q): hostname %q, want %q", tag, tc.env, tc.args, list[0].Hostname, tc.want)
		}
	}
	env := map[string]string{}
	for k, v := range base {
		env[k] = v
	}
	env["SCALR_BACKUP_HOST"] = "two words"
	for _, args := range [][]string{{"backup", "--stdin"}, {"pg-backup"}, {"drill"}} {
		res := runCLI(t, env, strings.NewReader("data"), args...)
		if res.code == 0 || !strings.Contains(res.stderr, `host name "two words" (from SCALR_BACKUP_HOST) holds white space`) {
			t.Errorf("%s with a bad SCALR_BACKUP_HOST: %d %s", args[0], res.code, res.stderr)
		}
	}
}

// pgstream writes drill records as drill, drill-of:CONTAINER,
// drill-passed|drill-failed under /drill/CONTAINER.json; nightly reads
// them, and the old shape (drill, CONTAINER, ...) too; neither is a
// backup of the container.
func TestDrillRecordTagsAgree(t *testing.T) {
	if nightly.DrillTag != pgstream.DrillTag || nightly.DrillOfTagPrefix != pgstream.DrillOfTagPrefix ||
		nightly.DrillPassedTag != pgstream.DrillPassedTag || nightly.DrillFailedTag != pgstream.DrillFailedTag {
		t.Fatal("drill tags differ")
	}
	name := "scalr-app-db"
	now := time.Now()
	newRec := &repo.Snapshot{Paths: []string{pgstream.DrillRecordPath(name)}, Tags: []string{pgstream.DrillTag, pgstream.DrillOfTagPrefix + name, pgstream.DrillPassedTag}, Time: now, Hostname: "h"}
	oldRec := &repo.Snapshot{Paths: []string{pgstream.DrillRecordPath(name)}, Tags: []string{pgstream.DrillTag, name, pgstream.DrillFailedTag}, Time: now.Add(-time.Hour), Hostname: "h"}
	backup := &repo.Snapshot{Paths: []string{"/" + name}, Tags: []string{name}, Time: now.Add(-2 * time.Hour), Hostname: "h"}
	// What `dump --tag NAME latest` selects: the backup, not the new record.
	byTag := repo.SnapshotFilter{Tags: []string{name}}
	if byTag.Matches(newRec) || !byTag.Matches(backup) {
		t.Error("a new drill record carries the container's tag")
	}
	if !(repo.SnapshotFilter{Tags: []string{"drill,drill-of:" + name + ",drill-passed"}}).Matches(newRec) {
		t.Error("the help's snapshots --tag drill,drill-of:NAME,drill-passed does not select a record")
	}
	for _, sn := range []*repo.Snapshot{newRec, oldRec} {
		if _, ok := nightly.ContainerOf(sn); ok {
			t.Errorf("%q passes for a backup", sn.Tags)
		}
	}
	inv := nightly.Inventory([]*repo.Snapshot{backup, newRec, oldRec}, "h")
	if len(inv) != 1 || inv[0].Container != name || inv[0].Snapshots != 1 || !inv[0].LastDrill.Equal(now) || !inv[0].LastDrillPassed {
		t.Errorf("inventory: %+v", inv)
	}
	inv = nightly.Inventory([]*repo.Snapshot{backup, oldRec}, "h")
	if len(inv) != 1 || !inv[0].LastDrill.Equal(now.Add(-time.Hour)) || inv[0].LastDrillPassed {
		t.Errorf("inventory, old record only: %+v", inv)
	}
}
