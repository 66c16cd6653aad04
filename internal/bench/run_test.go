//go:build linux

package bench

// The `run` row: `scalr-backup run` on a real Postgres container against
// `pg_dump -Fc -Z0 > /dev/null` alone on the same database. The issue's
// target is that the dump, not our pipeline, bounds the nightly pass.
// Postgres runs in a private dockerd (internal/testenv) with the cached
// image, as the cmd/ end-to-end tests start it.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

const runContainer = "scalr-benchrun-db"

// runRow is the run-vs-pg_dump result; notMeasured says why it is
// missing when it is.
type runRow struct {
	notMeasured string
	tableBytes  int64
	dumpBytes   int64
	pgDump      measurement // pg_dump -Fc -Z0 > /dev/null inside the container
	pgDumpPipe  measurement // the same dump streamed out through docker exec
	pgDumpAPI   measurement // the same through the Engine API, as run reads it
	pgDumpBuf   measurement // and under stdbuf -o1M, as run runs it
	run         measurement // scalr-backup run into a fresh local repository
}

// runVsPgDump fills a table of about cfg.runSize bytes and times the
// three ways of reading it, best of cfg.repeat each. It runs as a subtest
// so that a machine without dockerd skips this row, not the whole table.
func runVsPgDump(ctx context.Context, t *testing.T, cfg benchConfig, ours *tool, pwFile string) runRow {
	if cfg.runSize == 0 {
		return runRow{notMeasured: "skipped (SCALR_BENCH_RUN_SIZE=0)"}
	}
	row := runRow{notMeasured: "the run section did not finish (see the log above)"}
	t.Run("run-vs-pg_dump", func(t *testing.T) {
		start := time.Now()
		d := testenv.StartDocker(t)
		c := d.RunPostgres(t, runContainer, map[string]string{"POSTGRES_USER": "bench", "POSTGRES_DB": "bench"}, nil)
		row.tableBytes = fillTable(t, c, cfg.runSize)
		logf("run: dockerd, Postgres and a %s table ready in %.0f s", sizeStr(row.tableBytes), time.Since(start).Seconds())

		for rep := 0; rep < cfg.repeat; rep++ {
			m := timeDump(ctx, t, c, nil)
			keepFastest(&row.pgDump, m)
			logf("run: pg_dump -Fc -Z0 > /dev/null in the container  %s", m.describeSecs())
			hw := newHashWriter()
			m = timeDump(ctx, t, c, hw)
			row.dumpBytes = hw.n
			keepFastest(&row.pgDumpPipe, m)
			logf("run: pg_dump -Fc -Z0 through docker exec (%s)    %s", sizeStr(hw.n), m.describeSecs())
			m = timeDumpAPI(ctx, t, d, c)
			keepFastest(&row.pgDumpAPI, m)
			logf("run: the same through the Engine API                  %s", m.describeSecs())
			m = timeDumpAPI(ctx, t, d, c, "stdbuf", "-o1M")
			keepFastest(&row.pgDumpBuf, m)
			logf("run: the same under stdbuf -o1M                       %s", m.describeSecs())

			loc := filepath.Join(t.TempDir(), fmt.Sprintf("run-repo-%d", rep))
			env := runEnv(ours, d, loc, pwFile)
			if _, err := runChild(ctx, ours.bin, []string{"init"}, env, nil, nil); err != nil {
				t.Fatalf("init: %v", err)
			}
			m, err := runChild(ctx, ours.bin, []string{"run"}, env, nil, nil)
			if err != nil {
				t.Fatalf("scalr-backup run: %v", err)
			}
			keepFastest(&row.run, m)
			logf("run: scalr-backup run                                %s", m.describe(row.dumpBytes))
			_ = os.RemoveAll(loc)
		}
		row.notMeasured = ""
	})
	return row
}

// fillTable makes a table of COPY-like rows (ids, an account, a kind, hex
// notes, timestamps, amounts) of about size bytes on disk, in batches so
// that no single psql call runs for long, and returns its size.
func fillTable(t *testing.T, c *testenv.Container, size int64) int64 {
	t.Helper()
	c.Psql(t, "", `CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, kind text NOT NULL,
  note text NOT NULL, at timestamptz NOT NULL, amount numeric(12,2) NOT NULL);`)
	const rowBytes = 160 // measured on-disk bytes per row, heap and index
	rows := size / rowBytes
	const batch = 1_000_000
	for lo := int64(1); lo <= rows; lo += batch {
		hi := min(lo+batch-1, rows)
		c.Psql(t, "", fmt.Sprintf(`INSERT INTO events SELECT i, (i * 2654435761) %% 1000003,
  (ARRAY['click','view','purchase','refund'])[1 + i %% 4],
  md5(i::text) || ' ' || left(md5((i * 7)::text), (i %% 17)::int + 8),
  timestamptz '2026-01-01' + i * interval '13 milliseconds', (i %% 100000) / 100.0
FROM generate_series(%d, %d) i;`, lo, hi))
	}
	c.Psql(t, "", "VACUUM ANALYZE events;")
	var n int64
	if _, err := fmt.Sscan(c.Psql(t, "", "SELECT pg_total_relation_size('events');"), &n); err != nil {
		t.Fatalf("table size: %v", err)
	}
	return n
}

// timeDump runs pg_dump -Fc -Z0 in the container, after the wrapper
// command given, if any: into /dev/null there when out is nil, else
// streamed out through docker exec into out.
func timeDump(ctx context.Context, t *testing.T, c *testenv.Container, out io.Writer, wrapper ...string) measurement {
	t.Helper()
	args := append(append([]string(nil), wrapper...), "pg_dump", "-Fc", "-Z0", "-U", c.User, "-d", c.DB)
	if out == nil {
		args = []string{"sh", "-c", strings.Join(args, " ") + " > /dev/null"}
	}
	cmd := c.ExecCommand(ctx, false, args...)
	errTail := &testenv.TailBuffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, errTail
	start := time.Now()
	err := cmd.Run()
	m := measurement{secs: time.Since(start).Seconds(), reqs: -1, ok: err == nil}
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, errTail.Bytes())
	}
	return m
}

// timeDumpAPI streams pg_dump -Fc -Z0 (after the wrapper command, if any)
// out of the container as `run` reads a dump: an exec attached through the
// Engine API, its frames demultiplexed, the output discarded. The docker
// CLI adds a process and copies of its own to the same path.
func timeDumpAPI(ctx context.Context, t *testing.T, d *testenv.Docker, c *testenv.Container, wrapper ...string) measurement {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(d.Host()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	args := append(append([]string(nil), wrapper...), "pg_dump", "-Fc", "-Z0", "-U", c.User, "-d", c.DB)
	start := time.Now()
	var env []string // as testenv's CLI exec passes them: never in argv
	if c.Password != "" {
		env = append(env, "PGPASSWORD="+c.Password)
	}
	if c.Port != 0 {
		env = append(env, fmt.Sprintf("PGPORT=%d", c.Port))
	}
	cr, err := cli.ContainerExecCreate(ctx, c.Name, container.ExecOptions{Cmd: args, Env: env, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	hj, err := cli.ContainerExecAttach(ctx, cr.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	errTail := &testenv.TailBuffer{Max: 16 << 10}
	_, err = stdcopy.StdCopy(io.Discard, errTail, hj.Reader)
	hj.Close()
	secs := time.Since(start).Seconds()
	ins, ierr := cli.ContainerExecInspect(ctx, cr.ID)
	if err != nil || ierr != nil || ins.Running || ins.ExitCode != 0 {
		t.Fatalf("%s: %v, %v, exit %d\n%s", strings.Join(args, " "), err, ierr, ins.ExitCode, errTail.Bytes())
	}
	return measurement{secs: secs, reqs: -1, ok: true}
}

// runEnv is the environment of `scalr-backup run` against the private
// dockerd: nothing of the caller's SCALR_BACKUP_ or DOCKER_ settings, one
// container selected, no drill.
func runEnv(ours *tool, d *testenv.Docker, loc, pwFile string) []string {
	var env []string
	for _, kv := range ours.childEnv(loc, pwFile, nil) {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SCALR_BACKUP_") || strings.HasPrefix(k, "DOCKER_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"DOCKER_HOST="+d.Host(),
		"SCALR_BACKUP_PATTERNS="+runContainer,
		"SCALR_BACKUP_HOST=bench",
		"SCALR_BACKUP_DRILL_SCHEDULE=off",
		"SCALR_BACKUP_LOG_FORMAT=json",
	)
}

func keepFastest(dst *measurement, m measurement) {
	if !dst.ok || (m.ok && m.secs < dst.secs) {
		*dst = m
	}
}

func (m measurement) describeSecs() string {
	if !m.ok {
		return fmt.Sprintf("FAILED after %.2f s", m.secs)
	}
	return fmt.Sprintf("%7.2f s", m.secs)
}

func (r runRow) render() string {
	var b strings.Builder
	b.WriteString("`run` on a real Postgres 15 container (private dockerd; one database, one table; local repository, new each time):\n\n")
	if r.notMeasured != "" {
		fmt.Fprintf(&b, "- not measured: %s\n\n", r.notMeasured)
		return b.String()
	}
	fmt.Fprintf(&b, "| what | s | ratio to pg_dump alone |\n| --- | ---: | ---: |\n")
	fmt.Fprintf(&b, "| `pg_dump -Fc -Z0 > /dev/null` in the container | %.2f | 1.00 |\n", r.pgDump.secs)
	fmt.Fprintf(&b, "| the same dump through `docker exec` to the host | %.2f | %.2f |\n", r.pgDumpPipe.secs, r.pgDumpPipe.secs/r.pgDump.secs)
	fmt.Fprintf(&b, "| the same through the Engine API (as `run` reads it), output discarded | %.2f | %.2f |\n", r.pgDumpAPI.secs, r.pgDumpAPI.secs/r.pgDump.secs)
	fmt.Fprintf(&b, "| the same under `stdbuf -o1M` (1 MiB writes, as `run` runs it) | %.2f | %.2f |\n", r.pgDumpBuf.secs, r.pgDumpBuf.secs/r.pgDump.secs)
	fmt.Fprintf(&b, "| `scalr-backup run` (CPU %.2f s, RSS %s MiB) | %.2f | %.2f |\n\n", r.run.cpu, rssStr(r.run), r.run.secs, r.run.secs/r.pgDump.secs)
	fmt.Fprintf(&b, "- table %s on disk, dump %s\n\n", sizeStr(r.tableBytes), sizeStr(r.dumpBytes))
	return b.String()
}
