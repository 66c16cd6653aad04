package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// helpVariables are the variables `daemon --help` lists in its
// configuration table, in order.
func helpVariables(t *testing.T) []string {
	t.Helper()
	res := runCLI(t, nil, nil, "daemon", "--help")
	if res.code != 0 {
		t.Fatalf("daemon --help: exit %d: %s", res.code, res.stderr)
	}
	_, table, ok := strings.Cut(res.stdout, "Configuration (environment; flags win):\n")
	if !ok {
		t.Fatalf("daemon --help has no configuration table:\n%s", res.stdout)
	}
	table, _, _ = strings.Cut(table, "\nUsage:")
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  ([A-Z][A-Z0-9_]+) \(default `).FindAllStringSubmatch(table, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("no variables in daemon --help's table:\n%s", table)
	}
	var want []string
	for _, e := range daemonEnvironment() {
		want = append(want, e.Name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("daemon --help lists %v, daemonEnvironment %v", names, want)
	}
	return names
}

// diffSets reports the names only in a and only in b.
func diffSets(a, b []string) (onlyA, onlyB []string) {
	for _, n := range a {
		if !slices.Contains(b, n) {
			onlyA = append(onlyA, n)
		}
	}
	for _, n := range b {
		if !slices.Contains(a, n) {
			onlyB = append(onlyB, n)
		}
	}
	return onlyA, onlyB
}

// deploy/env.example names every variable daemon --help lists (set, or
// commented out as #NAME=VALUE), and nothing else.
func TestEnvExampleMatchesDaemonHelp(t *testing.T) {
	help := helpVariables(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "env.example"))
	if err != nil {
		t.Fatal(err)
	}
	var example []string
	for _, m := range regexp.MustCompile(`(?m)^#?([A-Z][A-Z0-9_]+)=`).FindAllStringSubmatch(string(b), -1) {
		if slices.Contains(example, m[1]) {
			t.Errorf("env.example names %s twice", m[1])
		}
		example = append(example, m[1])
	}
	onlyHelp, onlyExample := diffSets(help, example)
	if len(onlyHelp) > 0 {
		t.Errorf("daemon --help lists variables deploy/env.example lacks (add them, commented out with their default): %v", onlyHelp)
	}
	if len(onlyExample) > 0 {
		t.Errorf("deploy/env.example names variables daemon --help does not list (cmd/scalr-backup/daemon_env.go, nightly.Environment): %v", onlyExample)
	}
}

// The README's configuration section names every variable daemon --help
// lists: the SCALR_BACKUP_* ones as rows of its table, with the same
// default, the others in the table or the text above it; and its table has
// no row daemon --help does not know.
func TestReadmeConfigurationMatchesDaemonHelp(t *testing.T) {
	help := helpVariables(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no '## Configuration' section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	defaults := map[string]string{}
	for _, e := range daemonEnvironment() {
		defaults[e.Name] = e.Default
	}
	rowRE := regexp.MustCompile(`^\|\s*([A-Z][A-Z0-9_]+)\s*\|([^|]*)\|`)
	var rows, text []string
	for _, line := range strings.Split(section, "\n") {
		if m := rowRE.FindStringSubmatch(line); m != nil {
			name := m[1]
			rows = append(rows, name)
			def, known := defaults[name]
			if !known {
				continue
			}
			got := strings.TrimSpace(strings.ReplaceAll(m[2], "`", ""))
			if got == "–" || got == "-" {
				got = ""
			}
			if got != def {
				t.Errorf("README: %s's default is %q, daemon --help says %q", name, got, def)
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9_]+)`").FindAllStringSubmatch(line, -1) {
				text = append(text, m[1])
			}
		}
	}
	for _, name := range help {
		switch {
		case slices.Contains(rows, name):
		case strings.HasPrefix(name, "SCALR_BACKUP_"):
			t.Errorf("README's configuration table has no row for %s", name)
		case !slices.Contains(text, name):
			t.Errorf("README's configuration section does not name %s", name)
		}
	}
	if _, onlyRows := diffSets(help, rows); len(onlyRows) > 0 {
		t.Errorf("README's configuration table has rows daemon --help does not list: %v", onlyRows)
	}
}
