//go:build linux

package main

// The safe restore through the real binary: kill -9 at several points of a
// restore never leaves the live database missing (old or new, complete),
// the next restore cleans what the killed one left, and with two hosts
// sharing a repository each restores its own backups unless --host names
// the other's, which the terminal confirmation shows.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// restoreProc is the binary running a restore, its standard error read line
// by line.
type restoreProc struct {
	cmd   *exec.Cmd
	lines chan string
	all   bytes.Buffer
}

func startBinary(t *testing.T, env map[string]string, args ...string) *restoreProc {
	t.Helper()
	cmd := exec.Command(testBinary(t), args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &restoreProc{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return p
}

// waitLine waits for a line of standard error holding s.
func (p *restoreProc) waitLine(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the restore ended before printing %q:\n%s", s, p.all.String())
			}
			p.all.WriteString(line + "\n")
			if strings.Contains(line, s) {
				return
			}
		case <-timeout:
			t.Fatalf("no line %q within 3 minutes:\n%s", s, p.all.String())
		}
	}
}

// databases lists a container's databases other than templates and postgres.
func databases(t *testing.T, c *testenv.Container) string {
	t.Helper()
	return c.Psql(t, "postgres", `SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres';`)
}

// settle waits until no session but our own uses a database of the
// container: a killed restore's tools in the container end on their own.
func settle(t *testing.T, c *testenv.Container) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for c.Psql(t, "postgres", `SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'scalr\_restore\_%' OR (datname = 'app' AND pid <> pg_backend_pid());`) != "0" {
		if time.Now().After(deadline) {
			t.Fatal("sessions of the killed restore still there after a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRestoreKilled(t *testing.T) {
	testenv.Integration(t)
	d := testenv.StartDocker(t)
	c := d.RunPostgres(t, "scalr-kill-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	c.Psql(t, "", `CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 1000) i;
CREATE TABLE bulk (id bigint, payload text);
INSERT INTO bulk SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 400000) i;`)
	env := newRepoEnv(t, 2)
	env["DOCKER_HOST"] = d.Host()
	env["SCALR_BACKUP_HOST"] = "host-a"
	// The app database only: the kills below are timed on its restore.
	if res := runCLI(t, env, nil, "pg-backup", "--databases", "POSTGRES_DB", c.Name); res.code != 0 {
		t.Fatalf("pg-backup: %d %s", res.code, res.stderr)
	}
	backedUp := pgSums(t, c, "app")
	c.Psql(t, "", `DELETE FROM bulk WHERE id % 5 = 0; INSERT INTO items VALUES (5000, 'after the backup');`)
	live := pgSums(t, c, "app")

	// Killed while pg_restore streams into the side database.
	p := startBinary(t, env, "restore", c.Name, "latest", "--yes")
	p.waitLine(t, "pg_restore into scalr_restore_")
	time.Sleep(700 * time.Millisecond)
	p.cmd.Process.Kill()
	p.cmd.Wait()
	settle(t, c)
	if got := pgSums(t, c, "app"); got != live {
		t.Fatalf("killed mid pg_restore: the live database changed:\n%s\nwant\n%s", got, live)
	}
	dbs := databases(t, c)
	if !strings.HasPrefix(dbs, "app scalr_restore_") {
		t.Fatalf("killed mid pg_restore: databases %q, want app and the side database", dbs)
	}
	// discover names the leftover.
	side := strings.Fields(dbs)[1]
	res := runCLI(t, env, nil, "discover", "--json")
	if res.code != 0 || !strings.Contains(res.stdout, `"interrupted_restores":["`+side+`"]`) ||
		!strings.Contains(res.stderr, "database "+side+" was left by an interrupted restore") {
		t.Fatalf("discover after a killed restore: %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}

	// Killed inside the swap transaction, after both renames, before COMMIT.
	env[testStallEnv] = "swap-commit"
	p = startBinary(t, env, "restore", c.Name, "latest", "--yes")
	p.waitLine(t, "stalled at swap-commit")
	if !strings.Contains(p.all.String(), "dropping scalr_restore_") {
		t.Errorf("the restore after a killed one did not announce dropping its leftover:\n%s", p.all.String())
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	settle(t, c)
	if got := pgSums(t, c, "app"); got != live {
		t.Fatalf("killed before COMMIT: the live database changed:\n%s\nwant\n%s", got, live)
	}
	if dbs := databases(t, c); !strings.HasPrefix(dbs, "app scalr_restore_") || strings.Contains(dbs, "__replaced_") {
		t.Fatalf("killed before COMMIT: databases %q", dbs)
	}

	// Killed right after COMMIT: the restored database is live, the old
	// one kept.
	env[testStallEnv] = "swapped"
	p = startBinary(t, env, "restore", c.Name, "latest", "--yes")
	p.waitLine(t, "stalled at swapped")
	p.cmd.Process.Kill()
	p.cmd.Wait()
	settle(t, c)
	if got := pgSums(t, c, "app"); got != backedUp {
		t.Fatalf("killed after COMMIT: the live database is not the backup:\n%s\nwant\n%s", got, backedUp)
	}
	kept := strings.Fields(databases(t, c))
	if len(kept) != 2 || kept[0] != "app" || !strings.HasPrefix(kept[1], "app__replaced_") {
		t.Fatalf("killed after COMMIT: databases %q", kept)
	}
	if got := pgSums(t, c, kept[1]); got != live {
		t.Fatalf("the replaced database %s is not the old live one", kept[1])
	}

	// A whole restore afterwards, with --json: the previous is reported,
	// nothing is left over; then swap back by the documented command.
	delete(env, testStallEnv)
	res = runCLI(t, env, nil, "restore", c.Name, "latest", "--yes", "--json")
	var out restoreJSON
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || res.code != 0 || !out.OK || len(out.Databases) != 1 ||
		!strings.HasPrefix(out.Databases[0].Previous, "app__replaced_") || out.Databases[0].PreviousBytes == 0 || out.Host != "host-a" {
		t.Fatalf("restore --json: %d %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
	}
	res = runCLI(t, env, nil, "previous", c.Name)
	if res.code != 0 || !strings.Contains(res.stdout, out.Databases[0].Previous) || !strings.Contains(res.stdout, kept[1]) {
		t.Fatalf("previous: %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, env, nil, "previous", c.Name, "swap-back", kept[1])
	if res.code == 0 || !strings.Contains(res.stderr, "without --yes") {
		t.Fatalf("swap-back without --yes: %d %s", res.code, res.stderr)
	}
	res = runCLI(t, env, nil, "previous", c.Name, "swap-back", kept[1], "--yes")
	if res.code != 0 || !strings.Contains(res.stdout, "is back as app") {
		t.Fatalf("swap-back: %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if got := pgSums(t, c, "app"); got != live {
		t.Fatalf("after swap-back the live database is not the one before the restores")
	}
	for _, name := range strings.Fields(databases(t, c)) {
		if strings.HasPrefix(name, "scalr_restore_") {
			t.Errorf("left over: %s", name)
		}
		if strings.HasPrefix(name, "app__replaced_") {
			if res := runCLI(t, env, nil, "previous", c.Name, "drop", name, "--yes"); res.code != 0 {
				t.Errorf("previous drop %s: %d %s", name, res.code, res.stderr)
			}
		}
	}
	if dbs := databases(t, c); dbs != "app" {
		t.Errorf("databases after dropping the kept ones: %q", dbs)
	}
}

// TestRestoreTwoHosts: two hosts back up a container of the same name into
// one repository; each restores its own newest backup by default, and
// --host names the other's, which the confirmation prompt (on a real
// terminal, through script(1)) shows before anything changes.
func TestRestoreTwoHosts(t *testing.T) {
	testenv.Integration(t)
	scriptTool, err := exec.LookPath("script")
	if err != nil {
		testenv.Missing(t, "script(1) from util-linux is needed for the terminal prompt: %v", err)
	}
	d := testenv.StartDocker(t)
	c := d.RunPostgres(t, "scalr-twin-db", map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, nil)
	c.Psql(t, "", `CREATE TABLE who (host text, n int); INSERT INTO who SELECT 'prod', i FROM generate_series(1, 30) i;`)
	env := newRepoEnv(t, 2)
	env["DOCKER_HOST"] = d.Host()
	envProd, envStaging := map[string]string{}, map[string]string{}
	for k, v := range env {
		envProd[k], envStaging[k] = v, v
	}
	envProd["SCALR_BACKUP_HOST"] = "prod-1"
	envStaging["RESTIC_HOST"] = "staging-1" // the other spelling of the identity
	if res := runCLI(t, envProd, nil, "pg-backup", c.Name); res.code != 0 {
		t.Fatalf("prod pg-backup: %s", res.stderr)
	}
	prodSums := pgSums(t, c, "app")
	c.Psql(t, "", `UPDATE who SET host = 'staging'; INSERT INTO who VALUES ('staging', 99);`)
	if res := runCLI(t, envStaging, nil, "pg-backup", c.Name); res.code != 0 {
		t.Fatalf("staging pg-backup: %s", res.stderr)
	}
	stagingSums := pgSums(t, c, "app")
	// Staging's backup is the newest of the container name in the
	// repository; prod must still get its own.
	if res := runCLI(t, envProd, nil, "restore", c.Name, "latest", "--yes", "--drop-previous"); res.code != 0 {
		t.Fatalf("prod restore: %d %s", res.code, res.stderr)
	}
	if got := pgSums(t, c, "app"); got != prodSums {
		t.Fatalf("prod restored another host's backup:\n%s", got)
	}
	if res := runCLI(t, envStaging, nil, "restore", c.Name, "latest", "--yes", "--drop-previous"); res.code != 0 {
		t.Fatalf("staging restore: %d %s", res.code, res.stderr)
	} else if got := pgSums(t, c, "app"); got != stagingSums {
		t.Fatalf("staging restored another host's backup:\n%s", got)
	}

	// Prod asks for staging's backup on a terminal: the prompt names the
	// other host; "no" changes nothing, "yes" restores it.
	type prompt struct {
		answer string
		code   int
	}
	for _, pr := range []prompt{{"no", 1}, {"yes", 0}} {
		c.Psql(t, "", `TRUNCATE who; INSERT INTO who VALUES ('prod again', 1);`)
		before := pgSums(t, c, "app")
		line := fmt.Sprintf("%s restore %s latest --host staging-1 --drop-previous", testBinary(t), c.Name)
		cmd := exec.CommandContext(context.Background(), scriptTool, "-qec", line, "/dev/null")
		cmd.Env = os.Environ()
		for k, v := range envProd {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		// The answer is typed once the prompt is up: script(1) passes its
		// input to the terminal of the command.
		stdin, _ := cmd.StdinPipe()
		out := &testenv.TailBuffer{Max: 1 << 20}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for !strings.Contains(string(out.Bytes()), "Type yes to restore") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		io.WriteString(stdin, pr.answer+"\n")
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		text := string(out.Bytes())
		if !strings.Contains(text, "on host staging-1, NOT this host prod-1") {
			t.Errorf("the prompt does not name the other host:\n%s", text)
		}
		if code != pr.code {
			t.Fatalf("answer %q: exit %d, want %d:\n%s", pr.answer, code, pr.code, text)
		}
		want := before
		if pr.answer == "yes" {
			want = stagingSums
		}
		if got := pgSums(t, c, "app"); got != want {
			t.Fatalf("answer %q: the database is not what it should be:\n%s", pr.answer, got)
		}
	}
}
