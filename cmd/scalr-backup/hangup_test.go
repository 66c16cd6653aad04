//go:build linux

package main

// restic checks whether a lock's owner on the same host is alive by sending
// it SIGHUP (restic unlock, and restic commands that meet a lock); restic
// ignores the signal and scalr-backup must too.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

func TestHangupFromResticUnlock(t *testing.T) {
	testenv.Integration(t)
	bin := testBinary(t)
	testenv.EachRestic(t, func(t *testing.T, r *testenv.ResticCLI) {
		env := newRepoEnv(t, 2)
		cmd := exec.Command(bin, "backup", "--stdin", "--stdin-filename", "slow.bin")
		cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+env["RESTIC_REPOSITORY"], "RESTIC_PASSWORD="+env["RESTIC_PASSWORD"])
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		if _, err := stdin.Write(randomBytes(1, 4<<20)); err != nil {
			t.Fatal(err)
		}
		// The backup holds its lock: wait for it, then let restic probe it.
		lockDir := filepath.Join(env["RESTIC_REPOSITORY"], "locks")
		deadline := time.Now().Add(30 * time.Second)
		for {
			if ents, _ := os.ReadDir(lockDir); len(ents) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no lock appeared: %s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		res := r.MustRun(t, env["RESTIC_REPOSITORY"], env["RESTIC_PASSWORD"], nil, "unlock")
		t.Logf("restic unlock: %s", bytes.TrimSpace(res.Stdout))
		// And once more by hand, in case the version probed differently.
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("the backup is gone after restic unlock: %v (%s)", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
		if _, err := stdin.Write(randomBytes(2, 4<<20)); err != nil {
			t.Fatalf("the backup stopped reading after SIGHUP: %v (%s)", err, out.String())
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("backup after SIGHUP: %v\n%s", err, out.String())
		}
		r.MustRun(t, env["RESTIC_REPOSITORY"], env["RESTIC_PASSWORD"], nil, "check")
		snaps := r.MustRun(t, env["RESTIC_REPOSITORY"], env["RESTIC_PASSWORD"], nil, "snapshots", "--json")
		if !bytes.Contains(snaps.Stdout, []byte("/slow.bin")) {
			t.Fatalf("no snapshot after the SIGHUP: %s", snaps.Stdout)
		}
		if ents, _ := os.ReadDir(lockDir); len(ents) != 0 {
			t.Errorf("locks left: %d", len(ents))
		}
	})
}

func TestHangupIdleDaemon(t *testing.T) {
	testenv.Integration(t)
	env := newRepoEnv(t, 2)
	cmd := exec.Command(testBinary(t), "daemon")
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+env["RESTIC_REPOSITORY"], "RESTIC_PASSWORD="+env["RESTIC_PASSWORD"],
		"DOCKER_HOST=unix://"+filepath.Join(t.TempDir(), "no-docker.sock"), "SCALR_BACKUP_METRICS_ADDR=off",
		"SCALR_BACKUP_SCHEDULE=0 3 * * *", "SCALR_BACKUP_LOG_FORMAT=text")
	out := &testenv.TailBuffer{Max: 1 << 20}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(time.Second)
	for i := 0; i < 3; i++ {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("daemon gone: %v\n%s", err, out.Bytes())
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("daemon died of SIGHUP:\n%s", out.Bytes())
	}
	if !strings.Contains(string(out.Bytes()), "SIGHUP received and ignored") {
		t.Errorf("no log line for the SIGHUP:\n%s", out.Bytes())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon after SIGTERM: %v\n%s", err, out.Bytes())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not stop on SIGTERM:\n%s", out.Bytes())
	}
}
