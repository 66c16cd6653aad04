//go:build linux

package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/pgstream"
)

// TestSFTPRunRestoreDrill is acceptance 3 of issue 18: `run --init` over
// SFTP with two Postgres containers (the nightly end-to-end test's
// fixture and e2eRepo, with the repository on the test's sshd instead of
// versitygw), then restic 0.18.1 checks it over SFTP, `restore` puts a
// damaged database back and `drill` passes, all through the binary.
func TestSFTPRunRestoreDrill(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	fx := &e2eFixture{bin: testBinary(t)}
	rc := testenv.Restic(t, testenv.Restic0181)
	srv := testenv.StartSSH(t)
	fx.d = testenv.StartDocker(t)
	const nameA, nameB = "scalr-sftpa-db", "scalr-sftpb-db"
	a := fx.postgres(t, nameA, 1500)
	fx.a, fx.b = a, fx.postgres(t, nameB, 2500)
	fx.c = fx.b // noSecrets reads three
	t.Logf("dockerd, sshd and 2 containers ready in %s", time.Since(begin).Round(time.Millisecond))

	// The repository folder does not exist yet: run --init makes it.
	dir := filepath.Join(t.TempDir(), "nightly", "repo")
	r := &e2eRepo{fx: fx, loc: "sftp:" + sftpAlias + ":" + dir, pw: "sftp e2e " + e2eRandHex(t, 8)}
	r.pwFile = writePasswordFile(t, r.pw)
	home := t.TempDir()
	writeSSHHome(t, srv, home, srv.KeyFile)
	for _, kv := range cleanEnv() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "SCALR_BACKUP_") && !strings.HasPrefix(k, "DOCKER_") && !strings.HasPrefix(k, "SSH_") {
			r.env = append(r.env, kv)
		}
	}
	r.env = append(r.env,
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"RESTIC_REPOSITORY="+r.loc,
		"RESTIC_PASSWORD_FILE="+r.pwFile,
		"DOCKER_HOST="+fx.d.Host(),
		"SCALR_BACKUP_LOG_FORMAT=json",
		"SCALR_BACKUP_METRICS_ADDR=off",
		"SCALR_BACKUP_HOST="+e2eHost,
		"SCALR_BACKUP_PATTERNS=scalr-sftp?-db",
		"SCALR_BACKUP_DRILL_SCHEDULE=off",
	)

	res := r.mustRun(t, "run", "--init", "--json")
	t.Logf("run --init over SFTP: %s", res.took.Round(time.Millisecond))
	var rep e2eReport
	if err := json.Unmarshal(res.stdout, &rep); err != nil || !rep.OK || len(rep.Targets) != 2 {
		t.Fatalf("run report (%v): %s", err, res)
	}
	ids := map[string]string{}
	for _, tr := range rep.Targets {
		if tr.Status != "ok" || len(tr.SnapshotID) != 64 {
			t.Errorf("%s: %+v", tr.Container, tr)
		}
		ids[tr.Container] = tr.SnapshotID
	}
	fx.noSecrets(t, r, res.stdout, res.stderr)

	sr := &sftpRepo{srv: srv, pw: r.pwFile}
	rr := sr.restic(rc)
	rloc := srv.ResticLocation(dir)
	compareSnapshotLists(t, rr.MustRun(t, rloc, "", nil, "snapshots", "--json").Stdout, r.mustRun(t, "snapshots", "--json").stdout, false)
	resticCheckReadData(t, rr, rloc)

	// Damage a's data, then restore it from the repository over SFTP.
	want := pgSums(t, a, a.DB)
	a.Psql(t, "", "DELETE FROM items WHERE id % 3 = 0; UPDATE items SET name = 'damaged' WHERE id < 100;")
	if pgSums(t, a, a.DB) == want {
		t.Fatal("the damage did not change the sums")
	}
	res = r.mustRun(t, "restore", nameA, "latest", "--yes")
	t.Logf("restore over SFTP: %s", res.took.Round(time.Millisecond))
	if got := pgSums(t, a, a.DB); got != want {
		t.Errorf("after restore: %s\nwant %s", got, want)
	}

	res = r.mustRun(t, "drill", "--json", nameB)
	var drills []*pgstream.DrillResult
	if err := json.Unmarshal(res.stdout, &drills); err != nil || len(drills) != 1 || !drills[0].Passed || drills[0].Container != nameB {
		t.Fatalf("drill --json over SFTP (%v): %s", err, res)
	}
	t.Logf("drill over SFTP: %s; total %s", res.took.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}
