package main

import (
	"strings"
	"testing"
)

// With SCALR_BACKUP_METRICS_ADDR=off (documented in env.example) the daemon
// serves no /healthz: the compose healthcheck must not fail forever.
func TestHealthcheckMetricsOff(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{map[string]string{"SCALR_BACKUP_METRICS_ADDR": "off"}, nil},
		{map[string]string{"SCALR_BACKUP_METRICS_ADDR": "none"}, nil},
		{nil, []string{"--metrics-addr", "off"}},
	} {
		res := runCLI(t, tc.env, nil, append([]string{"daemon", "healthcheck"}, tc.args...)...)
		if res.code != 0 || !strings.Contains(res.stdout, "health unknown") {
			t.Errorf("healthcheck %v %v: exit %d, stdout %q, stderr %q; want exit 0 and 'health unknown'", tc.env, tc.args, res.code, res.stdout, res.stderr)
		}
		res = runCLI(t, tc.env, nil, append([]string{"daemon", "healthcheck", "--quiet"}, tc.args...)...)
		if res.code != 0 || res.stdout != "" {
			t.Errorf("healthcheck --quiet %v %v: exit %d, stdout %q; want exit 0 and nothing", tc.env, tc.args, res.code, res.stdout)
		}
	}
}
