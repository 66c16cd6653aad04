//go:build linux

package bench

// TestBenchTable is `make bench`: restic 0.18.1 and scalr-backup side by
// side, in one run, on the same generated stream. It is skipped unless
// SCALR_BACKUP_BENCH=1, so `go test ./...` passes over it at once.
//
// Environment (all optional):
//
//	SCALR_BENCH_SIZE     input size: 1GiB (default), 256MiB, 512MB, 100000000, …
//	SCALR_BENCH_SEED     generator seed (default DefaultSeed)
//	SCALR_BENCH_REPEAT   run every case N times and keep the fastest (default 1)
//	SCALR_BENCH_LATENCY  latency the proxy adds per request (default 20ms)
//	SCALR_BENCH_MEMORY   0: skip the memory section; 1: 1 GiB and 4 GiB;
//	                     unset: 1 GiB only
//	SCALR_BENCH_TARGETS  comma list of local,s3,s3-latency (default: all)
//	SCALR_BENCH_OUT      markdown results file (default
//	                     $TMPDIR/scalr-backup-bench/bench-results.md)
//	SCALR_BENCH_BIN      scalr-backup binary (default: go build into a
//	                     temporary folder)
//	SCALR_BENCH_PROFILE  a folder: also back up the input in-process through
//	                     the library into a local repository and write
//	                     cpu.pprof and heap.pprof there
//	SCALR_BENCH_RUN_SIZE size of the table `run` dumps from a real Postgres
//	                     container in a private dockerd (default 1GiB of
//	                     table data; 0 skips the row)
//
// The input is generated once into a file on /dev/shm (or the temporary
// folder when /dev/shm lacks room), so both tools read identical bytes at
// memory speed, and removed at the end. Every case uses fresh
// repositories; each tool runs as a child process with its stdin on that
// file (backup) or its stdout into SHA-256 (dump), and its wall time and
// peak RSS (getrusage of the child) are recorded. A dump whose SHA-256
// differs from the input's fails the test.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

const (
	streamName = "dump.sql" // --stdin-filename of every backup
	mib        = 1 << 20
)

// benchConfig is what the environment asked for.
type benchConfig struct {
	size    int64
	seed    uint64
	repeat  int
	latency time.Duration
	memory  []int64 // stream sizes of the memory section
	targets []string
	out     string
	profile string
	runSize int64 // table data of the run-vs-pg_dump row; 0: skip it
}

func loadConfig(t *testing.T) benchConfig {
	t.Helper()
	c := benchConfig{size: 1 << 30, seed: DefaultSeed, repeat: 1, latency: 20 * time.Millisecond,
		memory: []int64{1 << 30}, targets: []string{"local", "s3", "s3-latency"}, runSize: 1 << 30}
	var err error
	if v := os.Getenv("SCALR_BENCH_SIZE"); v != "" {
		if c.size, err = parseSize(v); err != nil || c.size < 1 {
			t.Fatalf("SCALR_BENCH_SIZE=%q: %v", v, err)
		}
	}
	if v := os.Getenv("SCALR_BENCH_SEED"); v != "" {
		if c.seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SCALR_BENCH_SEED=%q: %v", v, err)
		}
	}
	if v := os.Getenv("SCALR_BENCH_REPEAT"); v != "" {
		if c.repeat, err = strconv.Atoi(v); err != nil || c.repeat < 1 {
			t.Fatalf("SCALR_BENCH_REPEAT=%q: want a whole number >= 1", v)
		}
	}
	if v := os.Getenv("SCALR_BENCH_LATENCY"); v != "" {
		if c.latency, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SCALR_BENCH_LATENCY=%q: %v", v, err)
		}
	}
	switch v := os.Getenv("SCALR_BENCH_MEMORY"); v {
	case "":
	case "0":
		c.memory = nil
	case "1":
		c.memory = []int64{1 << 30, 4 << 30}
	default:
		t.Fatalf("SCALR_BENCH_MEMORY=%q: want 0 or 1", v)
	}
	if v := os.Getenv("SCALR_BENCH_TARGETS"); v != "" {
		c.targets = nil
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s != "local" && s != "s3" && s != "s3-latency" {
				t.Fatalf("SCALR_BENCH_TARGETS: unknown target %q (want local, s3, s3-latency)", s)
			}
			c.targets = append(c.targets, s)
		}
	}
	c.out = os.Getenv("SCALR_BENCH_OUT")
	if c.out == "" {
		c.out = filepath.Join(os.TempDir(), "scalr-backup-bench", "bench-results.md")
	}
	c.profile = os.Getenv("SCALR_BENCH_PROFILE")
	if v := os.Getenv("SCALR_BENCH_RUN_SIZE"); v != "" {
		if c.runSize, err = parseSize(v); err != nil || c.runSize < 0 {
			t.Fatalf("SCALR_BENCH_RUN_SIZE=%q: %v", v, err)
		}
	}
	return c
}

// parseSize reads "1GiB", "256MiB", "512MB", "64k", "1000000".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	n, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("not a size: %q", s)
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	}[strings.ToLower(strings.TrimSpace(s[i:]))]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit in %q (want B, KiB, MiB, GiB, KB, MB, GB)", s)
	}
	return int64(n * mult), nil
}

// ---------------------------------------------------------------------------
// Tools.

// tool is one CLI under test.
type tool struct {
	name    string // "restic" or "ours"
	bin     string
	version string
	home    string // HOME and XDG folders of its runs
	cache   string // RESTIC_CACHE_DIR (restic only)
}

// childEnv is the environment of a run: the test's, without anything that
// could point the child at another repository, password, credentials or
// home, plus the run's own variables.
func (tl *tool) childEnv(location, passwordFile string, extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RESTIC_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "XDG_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+tl.home,
		"XDG_CACHE_HOME="+filepath.Join(tl.home, ".cache"),
		"XDG_CONFIG_HOME="+filepath.Join(tl.home, ".config"),
		"RESTIC_REPOSITORY="+location,
		"RESTIC_PASSWORD_FILE="+passwordFile,
	)
	if tl.cache != "" {
		// restic keeps its local cache on, as a real user would, but in a
		// folder of its own.
		env = append(env, "RESTIC_CACHE_DIR="+tl.cache)
	}
	return append(env, extra...)
}

// measurement is one child run.
type measurement struct {
	secs   float64
	cpu    float64 // user + system CPU seconds of the child
	rssKiB int64
	bytes  int64  // dump: bytes written to stdout
	sha    string // dump: SHA-256 of stdout
	reqs   int64  // requests through the latency proxy (-1: not counted)
	ok     bool
}

// runChild runs bin with args and measures it. stdin may be nil; stdout
// nil discards.
func runChild(ctx context.Context, bin string, args, env []string, stdin io.Reader, stdout io.Writer) (measurement, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	outTail := &testenv.TailBuffer{Max: 16 << 10}
	if stdout == nil {
		stdout = outTail
	}
	errTail := &testenv.TailBuffer{Max: 32 << 10}
	cmd.Stdout, cmd.Stderr = stdout, errTail
	start := time.Now()
	err := cmd.Run()
	m := measurement{secs: time.Since(start).Seconds(), reqs: -1}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.rssKiB = ru.Maxrss // KiB on Linux
			m.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		}
	}
	if err != nil {
		return m, fmt.Errorf("%s %s: %v\nstdout (end):\n%s\nstderr (end):\n%s",
			filepath.Base(bin), strings.Join(args, " "), err, outTail.Bytes(), errTail.Bytes())
	}
	m.ok = true
	return m, nil
}

// hashWriter counts and hashes what a dump writes; the bytes go nowhere.
type hashWriter struct {
	n   int64
	sha interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newHashWriter() *hashWriter { return &hashWriter{sha: sha256.New()} }

func (h *hashWriter) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	return h.sha.Write(p)
}

// ---------------------------------------------------------------------------
// Targets and cases.

type target struct {
	name   string // "local", "s3", "s3-latency"
	label  string // in the table
	env    []string
	newLoc func(tool string, rep int) string
	proxy  *testenv.FaultProxy // counts requests; nil when direct
}

// benchCase is one row of the table.
type benchCase struct {
	id     string // "a".."i"
	target string
	step   string // "backup", "backup again", "dump"
}

func (c benchCase) label(targets map[string]*target) string {
	return fmt.Sprintf("(%s) %s %s", c.id, targets[c.target].label, c.step)
}

var steps = []string{"backup (new repo)", "backup again (dedup)", "dump to /dev/null", "check --read-data"}

// result is the best run of a case per tool.
type result map[string]measurement

func (r result) keepBest(tool string, m measurement) {
	if old, ok := r[tool]; !ok || !old.ok || (m.ok && m.secs < old.secs) {
		r[tool] = m
	}
}

// ---------------------------------------------------------------------------

func TestBenchTable(t *testing.T) {
	if os.Getenv("SCALR_BACKUP_BENCH") != "1" {
		t.Skip("the side-by-side benchmark runs with SCALR_BACKUP_BENCH=1 (make bench)")
	}
	cfg := loadConfig(t)
	mach := machineInfo()
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Hour)
	defer cancel()

	resticCLI := testenv.Restic(t, testenv.Restic0181)
	restic := &tool{name: "restic", bin: resticCLI.Path, home: t.TempDir(), cache: t.TempDir()}
	ours := &tool{name: "ours", bin: ourBinary(t), home: t.TempDir()}
	tools := []*tool{restic, ours}
	for _, tl := range tools {
		out, err := exec.Command(tl.bin, "version").Output()
		if err != nil {
			t.Fatalf("%s version: %v", tl.bin, err)
		}
		tl.version = strings.TrimSpace(string(out))
	}

	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(randomHex(t, 16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	input, inputSHA := generateInput(t, cfg)
	logf("input: %s, %s (%d bytes), sha256 %s", input, sizeStr(cfg.size), cfg.size, inputSHA)

	targets := map[string]*target{}
	var order []*target
	for _, name := range cfg.targets {
		var tg *target
		switch name {
		case "local":
			dir := t.TempDir()
			tg = &target{name: name, label: "local", newLoc: func(tool string, rep int) string {
				return filepath.Join(dir, fmt.Sprintf("%s-%d", tool, rep))
			}}
		case "s3", "s3-latency":
			srv := testenv.StartS3(t)
			tg = &target{name: name, env: srv.Env()}
			if name == "s3" {
				tg.label = "s3"
				tg.newLoc = func(tool string, rep int) string { return srv.URL(fmt.Sprintf("bench-%s-%d", tool, rep)) }
			} else {
				p := testenv.StartFaultProxy(t, srv.Endpoint, 1)
				p.SetLatency(cfg.latency)
				tg.proxy = p
				tg.label = fmt.Sprintf("s3 +%v", cfg.latency)
				tg.newLoc = func(tool string, rep int) string { return p.URL(fmt.Sprintf("bench-%s-lat-%d", tool, rep)) }
			}
		}
		targets[name] = tg
		order = append(order, tg)
	}

	var cases []benchCase
	results := map[benchCase]result{}
	// Letters are fixed per target (local a-d, s3 e-h, s3-latency i-l),
	// so a run of some targets only labels its rows like a full run.
	allTargets := []string{"local", "s3", "s3-latency"}
	for _, tg := range order {
		first := 'a' + rune(len(steps)*slices.Index(allTargets, tg.name))
		for si, st := range steps {
			c := benchCase{id: string(first + rune(si)), target: tg.name, step: st}
			cases = append(cases, c)
			results[c] = result{}
		}
	}
	repoSizes := map[string]int64{} // local only: tool -> bytes after its steps

	for rep := 0; rep < cfg.repeat; rep++ {
		for ti, tg := range order {
			locs := map[string]string{}
			for _, tl := range tools {
				locs[tl.name] = tg.newLoc(tl.name, rep)
				if _, err := runChild(ctx, tl.bin, []string{"init"}, tl.childEnv(locs[tl.name], pwFile, tg.env), nil, nil); err != nil {
					t.Fatalf("init: %v", err)
				}
			}
			for si := range steps {
				c := cases[ti*len(steps)+si]
				// Alternate which tool goes first, so that a change in the
				// machine's load does not always favour the same one.
				runOrder := tools
				if rep%2 == 1 {
					runOrder = []*tool{tools[1], tools[0]}
				}
				for _, tl := range runOrder {
					m := runCase(ctx, t, tl, c, tg, locs[tl.name], pwFile, input, inputSHA, cfg.size)
					results[c].keepBest(tl.name, m)
					logf("%-34s %-6s %s", c.label(targets), tl.name, m.describe(cfg.size))
				}
			}
			if tg.name == "local" {
				for _, tl := range tools {
					repoSizes[tl.name] = dirSize(locs[tl.name])
				}
			}
		}
	}

	var mem []memRow
	for _, size := range cfg.memory {
		mem = append(mem, memoryRun(ctx, t, tools, cfg, size, pwFile))
	}
	run := runVsPgDump(ctx, t, cfg, ours, pwFile)
	if cfg.profile != "" {
		profileBackup(ctx, t, cfg, input)
	}

	mach.loadEnd = loadAvg()
	md := render(cfg, mach, tools, cases, targets, results, repoSizes, mem, input)
	md += run.render()
	md += renderTargets(cases, targets, results, repoSizes, mem, run)
	fmt.Print("\n" + md + "\n")
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("results written to %s\n", cfg.out)
}

// runCase runs one step of one tool and checks a dump's bytes.
func runCase(ctx context.Context, t *testing.T, tl *tool, c benchCase, tg *target, loc, pwFile, input, inputSHA string, size int64) measurement {
	t.Helper()
	env := tl.childEnv(loc, pwFile, tg.env)
	var before int64
	if tg.proxy != nil {
		before = tg.proxy.Requests()
	}
	var m measurement
	var err error
	switch {
	case strings.HasPrefix(c.step, "backup"):
		f, ferr := os.Open(input)
		if ferr != nil {
			t.Fatal(ferr)
		}
		args := []string{"backup", "--stdin", "--stdin-filename", streamName, "--host", "bench"}
		m, err = runChild(ctx, tl.bin, args, env, f, nil)
		f.Close()
	case strings.HasPrefix(c.step, "check"):
		m, err = runChild(ctx, tl.bin, []string{"check", "--read-data"}, env, nil, nil)
	default:
		hw := newHashWriter()
		m, err = runChild(ctx, tl.bin, []string{"dump", "latest", "/" + streamName}, env, nil, hw)
		m.bytes, m.sha = hw.n, hex.EncodeToString(hw.sha.Sum(nil))
		if err == nil && (m.sha != inputSHA || m.bytes != size) {
			m.ok = false
			err = fmt.Errorf("%s dump returned %d bytes with sha256 %s, want %d bytes with sha256 %s", tl.name, m.bytes, m.sha, size, inputSHA)
		}
	}
	if tg.proxy != nil {
		m.reqs = tg.proxy.Requests() - before
	}
	if err != nil {
		t.Errorf("%s, %s: %v", tl.name, c.step, err)
	}
	return m
}

func (m measurement) describe(size int64) string {
	if !m.ok {
		return fmt.Sprintf("FAILED after %.2f s", m.secs)
	}
	s := fmt.Sprintf("%7.2f s %8.1f MiB/s  RSS %6.1f MiB  CPU %6.2f s", m.secs, float64(size)/mib/m.secs, float64(m.rssKiB)/1024, m.cpu)
	if m.reqs >= 0 {
		s += fmt.Sprintf("  %d requests", m.reqs)
	}
	if m.sha != "" {
		s += "  sha256 ok"
	}
	return s
}

// ---------------------------------------------------------------------------
// The memory section.

type memRow struct {
	size int64
	runs map[string]measurement
}

// memoryRun backs up a size-byte stream, generated on the fly and piped to
// the child, into a fresh local repository, with each tool.
func memoryRun(ctx context.Context, t *testing.T, tools []*tool, cfg benchConfig, size int64, pwFile string) memRow {
	t.Helper()
	row := memRow{size: size, runs: map[string]measurement{}}
	dir := t.TempDir()
	for _, tl := range tools {
		loc := filepath.Join(dir, tl.name)
		env := tl.childEnv(loc, pwFile, nil)
		if _, err := runChild(ctx, tl.bin, []string{"init"}, env, nil, nil); err != nil {
			t.Fatalf("init: %v", err)
		}
		args := []string{"backup", "--stdin", "--stdin-filename", streamName, "--host", "bench"}
		m, err := runChild(ctx, tl.bin, args, env, Stream(cfg.seed, size), nil)
		if err != nil {
			t.Errorf("memory run, %s, %s: %v", tl.name, sizeStr(size), err)
		}
		row.runs[tl.name] = m
		logf("memory %-8s piped %-25s %-6s %s", sizeStr(size), "backup (new repo)", tl.name, m.describe(size))
		// The repository is not needed any more: free the disk now.
		_ = os.RemoveAll(loc)
	}
	return row
}

// ---------------------------------------------------------------------------
// The in-process profile.

// profileBackup backs up the input through the library (no CLI) into a
// fresh local repository under a CPU profile, then writes a heap profile.
func profileBackup(ctx context.Context, t *testing.T, cfg benchConfig, input string) {
	t.Helper()
	if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
		t.Fatal(err)
	}
	loc := filepath.Join(t.TempDir(), "profile-repo")
	be, err := open.Create(ctx, loc, open.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, "profile", repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.Open(input)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cpuPath := filepath.Join(cfg.profile, "cpu.pprof")
	cpu, err := os.Create(cpuPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// io.MultiReader hides *os.File's WriterTo, as a pipe would.
	_, err = r.BackupStream(ctx, repo.Stream{Name: streamName, Reader: io.MultiReader(f)}, repo.BackupOptions{Hostname: "bench"})
	secs := time.Since(start).Seconds()
	pprof.StopCPUProfile()
	cpu.Close()
	if err != nil {
		t.Fatalf("in-process backup: %v", err)
	}
	heapPath := filepath.Join(cfg.profile, "heap.pprof")
	heap, err := os.Create(heapPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.Lookup("allocs").WriteTo(heap, 0); err != nil {
		t.Fatal(err)
	}
	heap.Close()
	logf("profile: in-process backup of %s in %.2f s (%.1f MiB/s); %s, %s", sizeStr(cfg.size), secs, float64(cfg.size)/mib/secs, cpuPath, heapPath)
}

// ---------------------------------------------------------------------------
// Output.

type machine struct {
	nproc     int
	cpu       string
	mem       string
	kernel    string
	goVersion string
	loadStart string
	loadEnd   string
	started   time.Time
}

func machineInfo() machine {
	m := machine{nproc: runtime.NumCPU(), goVersion: runtime.Version(), loadStart: loadAvg(), started: time.Now()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, _ := strings.Cut(string(b), "\n"); strings.HasPrefix(line, "MemTotal:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					m.mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func render(cfg benchConfig, mach machine, tools []*tool, cases []benchCase, targets map[string]*target,
	results map[benchCase]result, repoSizes map[string]int64, mem []memRow, input string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Benchmark: scalr-backup vs restic 0.18.1 (%s)\n\n", mach.started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %d CPUs (nproc), %s, %s RAM, Linux %s, %s. Load average (1/5/15 min) at start %s, at end %s.\n\n",
		mach.nproc, mach.cpu, mach.mem, mach.kernel, mach.goVersion, mach.loadStart, mach.loadEnd)
	for _, tl := range tools {
		fmt.Fprintf(&b, "- %s: `%s`\n", tl.name, tl.version)
	}
	where := "a tmpfs file"
	if !strings.HasPrefix(input, "/dev/shm/") {
		where = "a file in " + filepath.Dir(input)
	}
	fmt.Fprintf(&b, "- input: %s (%d bytes) from %s, seed %d: half pg_dump-COPY-like text rows, half random bytes (internal/bench/stream.go)\n",
		sizeStr(cfg.size), cfg.size, where, cfg.seed)
	rep := "each case run once"
	if cfg.repeat > 1 {
		rep = fmt.Sprintf("best of %d runs per case", cfg.repeat)
	}
	fmt.Fprintf(&b, "- fresh repositories per target (format version 2, default compression and pack size); %s; restic's cache on, in a folder of its own; every dump's SHA-256 checked against the input\n\n", rep)

	b.WriteString("| case | restic s | ours s | restic MiB/s | ours MiB/s | speed ours/restic | restic RSS MiB | ours RSS MiB |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range cases {
		r, o := results[c]["restic"], results[c]["ours"]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.label(targets),
			secsStr(r), secsStr(o), rateStr(r, cfg.size), rateStr(o, cfg.size), ratioStr(r, o), rssStr(r), rssStr(o))
	}
	b.WriteString("\n")
	b.WriteString("CPU time of the child (user + system seconds; less sensitive than wall time to other load on the machine):\n\n")
	b.WriteString("| case | restic CPU s | ours CPU s | CPU ours/restic |\n| --- | ---: | ---: | ---: |\n")
	for _, c := range cases {
		r, o := results[c]["restic"], results[c]["ours"]
		ratio := "-"
		if r.ok && o.ok && r.cpu > 0 {
			ratio = fmt.Sprintf("%.2f", o.cpu/r.cpu)
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %s |\n", c.label(targets), r.cpu, o.cpu, ratio)
	}
	b.WriteString("\n")

	var notes []string
	if len(repoSizes) == 2 {
		notes = append(notes, fmt.Sprintf("local repository size after both backups: restic %.1f MiB, ours %.1f MiB",
			float64(repoSizes["restic"])/mib, float64(repoSizes["ours"])/mib))
	}
	for _, c := range cases {
		if tg := targets[c.target]; tg.proxy != nil {
			r, o := results[c]["restic"], results[c]["ours"]
			notes = append(notes, fmt.Sprintf("(%s) requests through the latency proxy: restic %d, ours %d", c.id, r.reqs, o.reqs))
		}
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}

	if len(mem) > 0 {
		b.WriteString("Memory (backup of a stream piped from the generator into a fresh local repository; peak RSS of the child):\n\n")
		b.WriteString("| stream | restic s | ours s | restic CPU s | ours CPU s | restic RSS MiB | ours RSS MiB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, row := range mem {
			r, o := row.runs["restic"], row.runs["ours"]
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f | %s | %s |\n", sizeStr(row.size), secsStr(r), secsStr(o), r.cpu, o.cpu, rssStr(r), rssStr(o))
		}
		b.WriteString("\n")
		if len(mem) >= 2 {
			for _, tl := range []string{"ours", "restic"} {
				first, last := mem[0].runs[tl], mem[len(mem)-1].runs[tl]
				if first.ok && last.ok && first.rssKiB > 0 {
					fmt.Fprintf(&b, "- %s: peak RSS %s -> %s: %+.1f%%\n", tl, sizeStr(mem[0].size), sizeStr(mem[len(mem)-1].size),
						100*float64(last.rssKiB-first.rssKiB)/float64(first.rssKiB))
				}
			}
			b.WriteString("\n")
		} else {
			b.WriteString("- 4 GiB run skipped (set SCALR_BENCH_MEMORY=1 to compare 1 GiB with 4 GiB)\n\n")
		}
	}
	return b.String()
}

func secsStr(m measurement) string {
	if !m.ok {
		return "FAILED"
	}
	return fmt.Sprintf("%.2f", m.secs)
}

func rateStr(m measurement, size int64) string {
	if !m.ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(size)/mib/m.secs)
}

func ratioStr(r, o measurement) string {
	if !r.ok || !o.ok {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r.secs/o.secs)
}

func rssStr(m measurement) string {
	if m.rssKiB == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(m.rssKiB)/1024)
}

func sizeStr(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}

func logf(format string, args ...any) {
	fmt.Printf("[bench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------------------
// Setup helpers.

// ourBinary is SCALR_BENCH_BIN, or cmd/scalr-backup built into a temporary
// folder.
func ourBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SCALR_BENCH_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("SCALR_BENCH_BIN: %v", err)
		}
		return p
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is not on PATH (or set SCALR_BENCH_BIN): %v", err)
	}
	p := filepath.Join(t.TempDir(), "scalr-backup")
	cmd := exec.Command(goTool, "build", "-o", p, "github.com/scalr-platform/scalr-backup/cmd/scalr-backup")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return p
}

// generateInput writes the stream to a file on /dev/shm when it has room
// (else the temporary folder) and returns its path and SHA-256. The file
// is removed when the test ends.
func generateInput(t *testing.T, cfg benchConfig) (string, string) {
	t.Helper()
	dir := os.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err == nil && int64(st.Bavail)*int64(st.Bsize) > cfg.size+(512<<20) {
		dir = "/dev/shm"
	}
	f, err := os.CreateTemp(dir, "scalr-bench-input-*.bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(f.Name()) })
	h := sha256.New()
	start := time.Now()
	buf := make([]byte, 4<<20)
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), Stream(cfg.seed, cfg.size), buf); err != nil {
		f.Close()
		t.Fatalf("generate input: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	logf("generated %s in %.1f s", sizeStr(cfg.size), time.Since(start).Seconds())
	return f.Name(), hex.EncodeToString(h.Sum(nil))
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
