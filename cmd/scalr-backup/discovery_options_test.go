package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestDiscoveryOptions: discover, pg-backup and drill read the discovery
// environment as run and daemon do (nightly.LoadDiscovery), flags win.
func TestDiscoveryOptions(t *testing.T) {
	for _, c := range []struct {
		env   map[string]string
		args  []string
		want  string // patterns | databases
		error string
	}{
		{nil, nil, "[] | []", ""},
		{map[string]string{"SCALR_BACKUP_PATTERNS": "a-*, b", "SCALR_BACKUP_DATABASES": "POSTGRES_DB reports_*"}, nil, "[a-* b] | [POSTGRES_DB reports_*]", ""},
		{map[string]string{"SCALR_BACKUP_ALL_DATABASES": "true"}, nil, "[] | [all]", ""},
		{map[string]string{"SCALR_BACKUP_ALL_DATABASES": "false"}, nil, "[] | [POSTGRES_DB]", ""},
		{map[string]string{"SCALR_BACKUP_DATABASES": "POSTGRES_DB"}, []string{"--databases", "x,y", "--databases", "z", "--pattern", "p"}, "[p] | [x y z]", ""},
		{map[string]string{"SCALR_BACKUP_DATABASES": "POSTGRES_DB"}, []string{"--all-databases"}, "[] | [all]", ""},
		{nil, []string{"--all-databases", "--databases", "x"}, "", "--all-databases and --databases"},
		{nil, []string{"--databases", "a["}, "", `--databases "a["`},
		{map[string]string{"SCALR_BACKUP_DATABASES": "x", "SCALR_BACKUP_ALL_DATABASES": "true"}, nil, "", "both set"},
		{map[string]string{"SCALR_BACKUP_DATABASES": "[x"}, nil, "", "SCALR_BACKUP_DATABASES"},
	} {
		a, _, _ := nightlyApp(c.env)
		var df discoverFlags
		cmd := &cobra.Command{Use: "x"}
		df.add(cmd)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		o, err := a.discoveryOptions(&df)
		if c.error != "" {
			if err == nil || !strings.Contains(err.Error(), c.error) {
				t.Errorf("%v %q: error %v, want %q", c.env, c.args, err, c.error)
			}
			continue
		}
		if got := fmt.Sprintf("%v | %v", o.Patterns, o.Databases); err != nil || got != c.want {
			t.Errorf("%v %q: %s %v, want %s", c.env, c.args, got, err, c.want)
		}
		// run and daemon: the same.
		var nf nightlyFlags
		ncmd := &cobra.Command{Use: "y"}
		nf.add(ncmd)
		if err := ncmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"SCALR_BACKUP_HOST": "h"}
		for k, v := range c.env {
			env[k] = v
		}
		n, _, _ := nightlyApp(env)
		cfg, err := n.nightlyConfig(&nf)
		if got := fmt.Sprintf("%v | %v", cfg.Patterns, cfg.Databases); err != nil || got != c.want {
			t.Errorf("run/daemon %v %q: %s %v, want %s", c.env, c.args, got, err, c.want)
		}
	}
}
