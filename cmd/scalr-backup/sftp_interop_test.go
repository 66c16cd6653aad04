//go:build linux

package main

// SFTP storage (issue 18) through the commands, next to restic 0.14 and
// 0.18.1, against a real sshd started by the test (internal/testenv):
// acceptance 2 (interop and locks) and 4 (faults). scalr-backup reaches the
// server as an operator would: a Host alias in ~/.ssh/config (HostName,
// Port, User, IdentityFile) and the host key in ~/.ssh/known_hosts, in the
// CLI's private HOME. restic reaches it through its ssh program
// (-o sftp.command=…). Data is small: the point is the transport.

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

// sftpAlias is the ~/.ssh/config Host the tests' locations name.
const sftpAlias = "backupbox"

// sftpRepo is one repository folder on the test's sshd.
type sftpRepo struct {
	srv  *testenv.SSHServer
	dir  string // absolute, on the server (the same machine)
	loc  string // ours: sftp:ALIAS:DIR
	rloc string // restic's: sftp:USER@127.0.0.1:DIR with its ssh command
	pw   string // password file
	pass string
	ours *ourCLI
	home string // the CLI's HOME
}

func newSFTPRepo(t *testing.T, srv *testenv.SSHServer, label string) *sftpRepo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), label)
	r := &sftpRepo{
		srv:  srv,
		dir:  dir,
		loc:  "sftp:" + sftpAlias + ":" + dir,
		rloc: srv.ResticLocation(dir),
		pass: "sftp interop " + label,
	}
	r.pw = writePasswordFile(t, r.pass)
	r.ours = newOurCLI(t, &interopTarget{name: "sftp"}, r.loc, r.pw)
	for _, kv := range r.ours.env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			r.home = v
		}
	}
	writeSSHHome(t, srv, r.home, srv.KeyFile)
	return r
}

// writeSSHHome writes HOME/.ssh/config with the alias for srv (key file
// key) and HOME/.ssh/known_hosts with srv's host key, as an operator
// would set up a storage box.
func writeSSHHome(t *testing.T, srv *testenv.SSHServer, home, key string) {
	t.Helper()
	sshDir := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("Host %s\n  HostName 127.0.0.1\n  Port %s\n  User %s\n  IdentityFile %s\n", sftpAlias, srv.Port, srv.User, key)
	if err := os.WriteFile(filepath.Join(sshDir, "config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr())}, srv.HostKey) + "\n"
	if err := os.WriteFile(filepath.Join(sshDir, "known_hosts"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

// restic is rc reaching this repository with its password.
func (r *sftpRepo) restic(rc *testenv.ResticCLI) *testenv.ResticCLI {
	return rc.WithEnv("RESTIC_PASSWORD_FILE=" + r.pw).WithArgs(r.srv.ResticOptions()...)
}

// lib opens the repository in this process, through open as the CLI does.
func (r *sftpRepo) lib(t *testing.T) *repo.Repository {
	t.Helper()
	o, err := open.Open(t.Context(), r.srv.Location(r.dir), open.Options{
		Getenv:   func(string) string { return "" },
		Extended: r.srv.Options(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Open(t.Context(), o, r.pass, repo.Options{})
	if err != nil {
		o.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close(); o.Close() })
	return rp
}

// lockNames lists the lock files, read on the server's disk.
func (r *sftpRepo) lockNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(r.dir, "locks"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if backend.IsValidName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestSFTPInterop is acceptance 2: a repository we write over SFTP passes
// restic 0.14's and 0.18.1's check --read-data and dumps identically with
// both, over SFTP; restic 0.18.1 writes, we read, forget and prune, and
// both restic versions check the result; locks exclude each other both
// ways.
func TestSFTPInterop(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartSSH(t)
	r := newSFTPRepo(t, srv, "interop")
	start := time.Now()

	// init makes the folder on the server.
	r.ours.mustRun(t, nil, "init")
	if fi, err := os.Stat(filepath.Join(r.dir, "data", "ff")); err != nil || !fi.IsDir() {
		t.Fatalf("after init over SFTP: %v", err)
	}
	streams := []*interopStream{
		{label: "3MiB", name: "a.dump", seed: 181, size: 3 << 20},
		{label: "1MiB", name: "b.dump", seed: 182, size: 1 << 20},
	}
	for _, s := range streams {
		sum := r.ours.backup(t, newMixedStream(s.seed, s.size), "--stdin-filename", s.name, "--host", "sftp-host")
		s.snap, s.hash = sum.SnapshotID, streamHash(s.seed, s.size)
	}
	t.Logf("init and 2 backups over SFTP: %s", time.Since(start).Round(time.Millisecond))

	testenv.EachRestic(t, func(t *testing.T, rc *testenv.ResticCLI) {
		rr := r.restic(rc)
		resticCheckReadData(t, rr, r.rloc)
		for _, s := range streams {
			got, n := resticDumpHash(t, rr, r.rloc, s.snap, "/"+s.name)
			if got != s.hash || n != s.size {
				t.Errorf("restic %s dump %s: %d bytes %.12s, want %d bytes %.12s", rc.Version, s.name, n, got, s.size, s.hash)
			}
		}
		compareSnapshotLists(t, rr.MustRun(t, r.rloc, "", nil, "snapshots", "--json").Stdout, r.ours.snapshots(t), rc.Version == testenv.Restic014)
	})

	r18 := r.restic(testenv.Restic(t, testenv.Restic0181))
	r14 := r.restic(testenv.Restic(t, testenv.Restic014))
	t.Run("restic-writes-we-read-forget-prune", func(t *testing.T) {
		var snaps []string
		for _, seed := range []uint64{183, 184} {
			res := r18.MustRun(t, r.rloc, "", newMixedStream(seed, 2<<20), "backup", "--stdin", "--stdin-filename", "c.dump", "--host", "sftp-host", "--json")
			id := resticBackupSummary(t, res).SnapshotID
			snaps = append(snaps, id)
			if got, n := r.ours.dumpHash(t, id, "/c.dump"); got != streamHash(seed, 2<<20) || n != 2<<20 {
				t.Errorf("our dump of restic's snapshot %.8s: %d bytes %.12s", id, n, got)
			}
		}
		res := r.ours.mustRun(t, nil, "forget", "--keep-last", "1", "--path", "/c.dump", "--prune")
		t.Logf("our forget --prune over SFTP:\n%s", clip(res.stdout))
		got := decodeSnapshots(t, "scalr-backup", r.ours.snapshots(t))
		if _, ok := got[snaps[0]]; ok || len(got) != 3 {
			t.Errorf("after forget --keep-last 1: %v, want a.dump, b.dump and %.8s", sortedKeys(got), snaps[1])
		}
		resticCheckReadData(t, r14, r.rloc)
		if res := r18.MustRun(t, r.rloc, "", nil, "check"); !strings.Contains(string(res.Stdout), "no errors were found") {
			t.Errorf("restic 0.18.1 check after our prune:\n%s", res.Stdout)
		}
		if sum, n := resticDumpHash(t, r14, r.rloc, snaps[1], "/c.dump"); sum != streamHash(184, 2<<20) || n != 2<<20 {
			t.Errorf("restic 0.14 dump after our prune: %d bytes %.12s", n, sum)
		}
	})

	t.Run("our-lock-stops-restic", func(t *testing.T) {
		rp := r.lib(t)
		l, err := rp.Lock(t.Context(), true) // as prune holds it
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range []*testenv.ResticCLI{r14, r18} {
			res, err := rr.Run(t.Context(), r.rloc, "", strings.NewReader("x"), "backup", "--stdin", "--stdin-filename", "locked.dump")
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode == 0 || !strings.Contains(string(res.Stderr), "locked") {
				t.Errorf("restic %s backup next to our exclusive lock: exit %d\n%s", rr.Version, res.ExitCode, res.Stderr)
			}
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restic-lock-stops-us", func(t *testing.T) {
		before := r.lockNames(t)
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			res, err := r18.Run(t.Context(), r.rloc, "", pr, "backup", "--stdin", "--stdin-filename", "held.dump")
			if err == nil {
				err = res.Err()
			}
			pr.CloseWithError(errors.New("restic exited"))
			done <- err
		}()
		if _, err := pw.Write([]byte("held open while our prune runs\n")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(r.lockNames(t)) <= len(before) {
			if time.Now().After(deadline) {
				t.Fatal("restic's backup made no lock file within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		res := r.ours.run(t, nil, "prune")
		if res.code != exitLocked || !strings.Contains(string(res.stderr), "locked") {
			t.Errorf("our prune next to restic's running backup: %s", res)
		}
		pw.Close()
		if err := <-done; err != nil {
			t.Errorf("restic backup after our refused prune: %v", err)
		}
	})
	if len(r.lockNames(t)) != 0 {
		t.Errorf("locks left: %v", r.lockNames(t))
	}
	t.Logf("TestSFTPInterop: %s", time.Since(start).Round(time.Millisecond))
}

// sftpStart runs our CLI with stdin from a pipe the test feeds, returning
// the pipe and a channel with the run once it ends.
func sftpStart(t *testing.T, c *ourCLI, args ...string) (*io.PipeWriter, <-chan cliRun) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan cliRun, 1)
	go func() {
		res := c.run(t, pr, args...)
		pr.CloseWithError(errors.New("scalr-backup exited"))
		done <- res
	}()
	return pw, done
}

// TestSFTPFaults is acceptance 4: sshd killed mid-backup and restarted
// (the backup retries within its budget and its snapshot checks clean;
// with the server left down the backup fails clearly and leaves no
// snapshot); an unknown or changed host key is refused naming the
// fingerprint and the line to add; a key the server does not take fails
// in under 5 s; a read-only server fails at once.
func TestSFTPFaults(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartSSH(t)
	r := newSFTPRepo(t, srv, "faults")
	r.ours.mustRun(t, nil, "init")
	// Small packs, so uploads are under way when the server dies; short
	// waits between attempts, so the test is quick.
	r.ours.env = append(r.ours.env, "RESTIC_PACK_SIZE=4", "SCALR_BACKUP_RETRY_INITIAL_DELAY=200ms", "SCALR_BACKUP_RETRY_MAX_DELAY=2s")
	r18 := r.restic(testenv.Restic(t, testenv.Restic0181))

	t.Run("sshd-killed-and-restarted", func(t *testing.T) {
		const size, seed = 16 << 20, 191
		pw, done := sftpStart(t, r.ours, "backup", "--stdin", "--stdin-filename", "killed.dump", "--json")
		src := newMixedStream(seed, size)
		// Feed the stream in the background and kill sshd the moment an
		// upload is under way: its temporary file is on the server's disk
		// (this machine's).
		fed := make(chan error, 1)
		go func() {
			err := retFeed(pw, src, size, 256<<10, 0)
			pw.Close()
			fed <- err
		}()
		var tmp string
		for deadline := time.Now().Add(60 * time.Second); tmp == ""; time.Sleep(time.Millisecond) {
			if m, _ := filepath.Glob(filepath.Join(r.dir, "data", "*", backend.TempPrefix+"*")); len(m) > 0 {
				tmp = m[0]
			}
			select {
			case res := <-done:
				t.Fatalf("the backup ended before an upload was seen: %s", res)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("no upload seen within 60s")
			}
		}
		srv.Kill(t)
		killed := time.Now()
		fi, _ := os.Stat(tmp)
		t.Logf("sshd killed during the upload of %s (%d bytes written so far)", filepath.Base(tmp), sizeOf(fi))
		time.Sleep(1500 * time.Millisecond)
		srv.Restart(t)
		t.Logf("sshd down for %s", time.Since(killed).Round(time.Millisecond))
		if err := <-fed; err != nil {
			t.Fatal(err)
		}
		res := <-done
		if res.code != 0 {
			t.Fatalf("backup across an sshd restart: %s", res)
		}
		if !strings.Contains(string(res.stderr), "storage retry:") {
			t.Errorf("no storage retry reported across the restart:\n%s", res.stderr)
		}
		t.Logf("retries:\n%s", clip(res.stderr))
		var sum ourSummary
		if err := json.Unmarshal(lastJSONLine(res.stdout), &sum); err != nil {
			t.Fatal(err)
		}
		if got, n := resticDumpHash(t, r18, r.rloc, sum.SnapshotID, "/killed.dump"); got != streamHash(seed, size) || n != size {
			t.Errorf("restic dump of the snapshot made across the restart: %d bytes %.12s", n, got)
		}
		resticCheckReadData(t, r18, r.rloc)
	})

	t.Run("sshd-killed-for-good", func(t *testing.T) {
		before := decodeSnapshots(t, "scalr-backup", r.ours.snapshots(t))
		c := &ourCLI{bin: r.ours.bin, env: append(append([]string(nil), r.ours.env...), "SCALR_BACKUP_RETRY_MAX_ELAPSED=3s")}
		pw, done := sftpStart(t, c, "backup", "--stdin", "--stdin-filename", "lost.dump")
		src := newMixedStream(192, 8<<20)
		if err := retFeed(pw, src, 5<<20, 256<<10, 0); err != nil {
			t.Fatal(err)
		}
		srv.Kill(t)
		start := time.Now()
		_ = retFeed(pw, src, 3<<20, 256<<10, 0) // may fail: the backup gave up
		pw.Close()
		res := <-done
		took := time.Since(start)
		if res.code == 0 || !strings.Contains(string(res.stderr), "connect to") {
			t.Errorf("backup with the server gone: want a failure naming the connection: %s", res)
		}
		t.Logf("failed after %s: %s", took.Round(time.Millisecond), lastLine(res.stderr))
		if took > 60*time.Second {
			t.Errorf("the failure took %s", took)
		}
		srv.Restart(t)
		if after := decodeSnapshots(t, "scalr-backup", r.ours.snapshots(t)); len(after) != len(before) {
			t.Errorf("a failed backup left a snapshot: %v before, %v after", sortedKeys(before), sortedKeys(after))
		}
		// The lock it could not remove is stale now; unlock clears it so
		// the checks below see a quiet repository.
		r.ours.mustRun(t, nil, "unlock", "--remove-all")
		if res := r18.MustRun(t, r.rloc, "", nil, "check"); !strings.Contains(string(res.Stdout), "no errors were found") {
			t.Errorf("restic 0.18.1 check after the failed backup:\n%s", res.Stdout)
		}
	})

	// The host-key and login cases run `snapshots` from a HOME of their
	// own with the same alias.
	variant := func(t *testing.T, key string, knownHosts []byte) cliRun {
		t.Helper()
		c := &ourCLI{bin: r.ours.bin, env: append([]string(nil), r.ours.env...)}
		home := t.TempDir()
		for i, kv := range c.env {
			if strings.HasPrefix(kv, "HOME=") {
				c.env[i] = "HOME=" + home
			}
		}
		writeSSHHome(t, srv, home, key)
		kh := filepath.Join(home, ".ssh", "known_hosts")
		if knownHosts != nil {
			if err := os.WriteFile(kh, knownHosts, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		res := c.run(t, nil, "snapshots")
		t.Logf("%s: exit %d in %s: %s", t.Name(), res.code, time.Since(start).Round(time.Millisecond), lastLine(res.stderr))
		if res.code == 0 {
			t.Fatalf("snapshots succeeded: %s", res)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %s, want a failure in under 5 s", time.Since(start))
		}
		if after, _ := os.ReadFile(kh); string(after) != string(knownHosts) && knownHosts != nil {
			t.Errorf("known_hosts was changed: %q", after)
		}
		return res
	}
	fp := ssh.FingerprintSHA256(srv.HostKey)
	line := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr())}, srv.HostKey)

	t.Run("unknown-host-key", func(t *testing.T) {
		res := variant(t, srv.KeyFile, []byte{})
		t.Logf("the refusal:\n%s", res.stderr)
		for _, want := range []string{"not known", fp, line} {
			if !strings.Contains(string(res.stderr), want) {
				t.Errorf("stderr does not name %q:\n%s", want, res.stderr)
			}
		}
	})
	t.Run("changed-host-key", func(t *testing.T) {
		other := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr())}, sftpOtherKey(t)) + "\n"
		res := variant(t, srv.KeyFile, []byte(other))
		for _, want := range []string{"HOST KEY CHANGED", fp, line} {
			if !strings.Contains(string(res.stderr), want) {
				t.Errorf("stderr does not name %q:\n%s", want, res.stderr)
			}
		}
	})
	t.Run("wrong-key", func(t *testing.T) {
		res := variant(t, srv.NewKey(t), nil)
		if !strings.Contains(string(res.stderr), "refused the keys") || strings.Contains(string(res.stderr), "storage retry") {
			t.Errorf("want one refusal, no retries:\n%s", res.stderr)
		}
	})

	t.Run("missing-folder", func(t *testing.T) {
		missing := filepath.Join(filepath.Dir(r.dir), "no-such-folder")
		c := &ourCLI{bin: r.ours.bin, env: append(append([]string(nil), r.ours.env...), "RESTIC_REPOSITORY=sftp:"+sftpAlias+":"+missing)}
		start := time.Now()
		res := c.run(t, nil, "snapshots")
		t.Logf("snapshots of a missing folder: exit %d in %s: %s", res.code, time.Since(start).Round(time.Millisecond), lastLine(res.stderr))
		if res.code != exitNoRepo || !strings.Contains(string(res.stderr), missing+" does not exist") || strings.Contains(string(res.stderr), "storage retry") {
			t.Errorf("want exit %d naming the missing folder, without retries: %s", exitNoRepo, res)
		}
	})

	t.Run("read-only-server", func(t *testing.T) {
		ro := testenv.StartSSHWith(t, testenv.SSHOptions{ReadOnly: true})
		c := &ourCLI{bin: r.ours.bin, env: append([]string(nil), r.ours.env...)}
		writeSSHHome(t, ro, r.home, ro.KeyFile) // the same repository folder, served read-only
		defer writeSSHHome(t, srv, r.home, srv.KeyFile)
		start := time.Now()
		res := c.run(t, strings.NewReader("refused"), "backup", "--stdin", "--stdin-filename", "ro.dump")
		took := time.Since(start)
		t.Logf("backup on a read-only server: exit %d in %s: %s", res.code, took.Round(time.Millisecond), lastLine(res.stderr))
		if res.code == 0 || !strings.Contains(string(res.stderr), "permission denied") || strings.Contains(string(res.stderr), "storage retry") {
			t.Errorf("want a failure naming permission denied, without retries: %s", res)
		}
		if took > 5*time.Second {
			t.Errorf("took %s, want a failure at once", took)
		}
		// Reading still works (snapshots takes no lock).
		if res := c.run(t, nil, "snapshots"); res.code != 0 {
			t.Errorf("snapshots on the read-only server: %s", res)
		}
	})
}

// TestSFTPFullDisk: the server's file system fills up during a backup.
// OpenSSH's server reports that only as "failure"; statvfs tells, and the
// backup fails at once naming it, with no retries; with room again both
// CLIs check the repository clean. Needs root for the tmpfs, as
// TestUnwritableLocal's full disk.
func TestSFTPFullDisk(t *testing.T) {
	testenv.Integration(t)
	srv := testenv.StartSSH(t)
	small := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(small, 0o700); err != nil {
		t.Fatal(err)
	}
	unwMount(t, "tmpfs", small, "-t", "tmpfs", "-o", "size=4m")
	r := newSFTPRepo(t, srv, "full")
	r.dir = filepath.Join(small, "repo")
	r.loc, r.rloc = "sftp:"+sftpAlias+":"+r.dir, srv.ResticLocation(r.dir)
	for i, kv := range r.ours.env {
		if strings.HasPrefix(kv, "RESTIC_REPOSITORY=") {
			r.ours.env[i] = "RESTIC_REPOSITORY=" + r.loc
		}
	}
	r.ours.mustRun(t, nil, "init")
	r.ours.backup(t, newMixedStream(1, 1<<20), "--stdin-filename", "db")
	unwFill(t, small)
	unwFree(t, small, 256<<10) // room for a lock, not for the data
	start := time.Now()
	res := r.ours.run(t, newMixedStream(8, 16<<20), "backup", "--stdin", "--stdin-filename", "db2")
	took := time.Since(start)
	t.Logf("backup onto a full disk over SFTP: exit %d in %s: %s", res.code, took.Round(time.Millisecond), lastLine(res.stderr))
	if res.code == 0 || !strings.Contains(string(res.stderr), "no space left") || strings.Contains(string(res.stderr), "storage retry") {
		t.Errorf("want a failure naming the full disk, without retries: %s", res)
	}
	if took > 10*time.Second {
		t.Errorf("took %s, want a failure at once", took)
	}
	if err := os.Remove(filepath.Join(small, "filler")); err != nil {
		t.Fatal(err)
	}
	r.ours.mustRun(t, nil, "check", "--read-data")
	if out := r.restic(testenv.Restic(t, testenv.Restic0181)).MustRun(t, r.rloc, "", nil, "check").Stdout; !strings.Contains(string(out), "no errors were found") {
		t.Errorf("restic check after the full disk:\n%s", out)
	}
}

// sftpOtherKey is a public key that is not the server's.
func sftpOtherKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lastLine is the last non-empty line of b.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
