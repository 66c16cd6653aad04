package nightly

import (
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig(envOf(map[string]string{"SCALR_BACKUP_HOST": "h1"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Schedule: "0 3 * * *", DrillSchedule: "0 5 1 * *", Policy: repo.ExpirePolicy{Daily: 30, Weekly: 4, Monthly: 6},
		Host: "h1", TargetTimeout: 6 * time.Hour, RetryLock: 15 * time.Minute, HookTimeout: 2 * time.Minute,
		WebhookTimeout: 10 * time.Second, StaleAfter: 26 * time.Hour, MetricsAddr: "127.0.0.1:9187", LogFormat: "auto",
	}
	if c.Schedule != want.Schedule || c.DrillSchedule != want.DrillSchedule || c.Policy.String() != want.Policy.String() ||
		c.Host != want.Host || c.TargetTimeout != want.TargetTimeout || c.RetryLock != want.RetryLock ||
		c.HookTimeout != want.HookTimeout || c.WebhookTimeout != want.WebhookTimeout || c.StaleAfter != want.StaleAfter ||
		c.MetricsAddr != want.MetricsAddr || c.LogFormat != want.LogFormat || c.Patterns != nil || c.Init || c.AllowEmpty {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if c, _ := LoadConfig(envOf(nil)); c.Host == "" {
		t.Error("no host name by default")
	}
	if c, _ := LoadConfig(envOf(map[string]string{"RESTIC_HOST": "rh"})); c.Host != "rh" {
		t.Errorf("RESTIC_HOST: %q", c.Host)
	}
	// Every variable read is documented.
	documented := map[string]bool{}
	for _, e := range Environment() {
		documented[e.Name] = true
	}
	read := map[string]bool{}
	_, _ = LoadConfig(func(k string) string { read[k] = true; return "" })
	delete(read, "RESTIC_HOST") // restic's own, documented with SCALR_BACKUP_HOST
	for k := range read {
		if !documented[k] {
			t.Errorf("%s is read but not in Environment", k)
		}
	}
	for k := range documented {
		if !read[k] {
			t.Errorf("%s is documented but not read", k)
		}
	}
}

func TestLoadConfigOverrides(t *testing.T) {
	c, err := LoadConfig(envOf(map[string]string{
		"SCALR_BACKUP_SCHEDULE":           "30 2 * * *",
		"SCALR_BACKUP_DRILL_SCHEDULE":     "off",
		"SCALR_BACKUP_KEEP_DAILY":         "7",
		"SCALR_BACKUP_KEEP_WEEKLY":        "unlimited",
		"SCALR_BACKUP_KEEP_MONTHLY":       "0",
		"SCALR_BACKUP_PATTERNS":           "scalr-*-db, other-db\tauth",
		"SCALR_BACKUP_ALL_DATABASES":      "true",
		"SCALR_BACKUP_HOST":               "prod-1",
		"SCALR_BACKUP_ALLOW_EMPTY":        "1",
		"SCALR_BACKUP_TARGET_TIMEOUT":     "0",
		"SCALR_BACKUP_RETRY_LOCK":         "1h",
		"SCALR_BACKUP_INIT":               "true",
		"SCALR_BACKUP_ON_FAILURE":         "curl -fsS https://example.invalid/x",
		"SCALR_BACKUP_ON_SUCCESS":         "  ",
		"SCALR_BACKUP_HOOK_TIMEOUT":       "30s",
		"SCALR_BACKUP_WEBHOOK_URL":        "https://hooks.example.invalid/T/B/secret",
		"SCALR_BACKUP_WEBHOOK_ON_SUCCESS": "true",
		"SCALR_BACKUP_WEBHOOK_TIMEOUT":    "3s",
		"SCALR_BACKUP_HEALTHCHECK_URL":    "https://hc-ping.com/uuid",
		"SCALR_BACKUP_STALE_AFTER":        "2d",
		"SCALR_BACKUP_METRICS_ADDR":       "0.0.0.0:9100",
		"SCALR_BACKUP_TEXTFILE":           "/var/lib/node_exporter/scalr_backup.prom",
		"SCALR_BACKUP_LOG_FORMAT":         "TEXT",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Schedule != "30 2 * * *" || c.DrillSchedule != "" || c.Policy.String() != (repo.ExpirePolicy{Daily: 7, Weekly: -1}).String() ||
		strings.Join(c.Patterns, "|") != "scalr-*-db|other-db|auth" || !c.AllDatabases || c.Host != "prod-1" || !c.AllowEmpty ||
		c.TargetTimeout != 0 || c.RetryLock != time.Hour || !c.Init || c.OnFailure == "" || c.OnSuccess != "" ||
		c.HookTimeout != 30*time.Second || c.WebhookURL == "" || !c.WebhookOnSuccess || c.WebhookTimeout != 3*time.Second ||
		c.HealthcheckURL != "https://hc-ping.com/uuid" || c.StaleAfter != 48*time.Hour || c.MetricsAddr != "0.0.0.0:9100" ||
		c.Textfile == "" || c.LogFormat != "text" {
		t.Errorf("overrides: %+v", c)
	}
	c, err = LoadConfig(envOf(map[string]string{"SCALR_BACKUP_METRICS_ADDR": "off"}))
	if err != nil || c.MetricsAddr != "" {
		t.Errorf("metrics off: %q %v", c.MetricsAddr, err)
	}
	o := c.PassOptions()
	if o.Policy.String() != DefaultPolicy().String() || !o.RemoveStaleLocks || o.TargetTimeout != DefaultTargetTimeout {
		t.Errorf("pass options %+v", o)
	}
	a := c.Alerter()
	if a.Host != c.Host || a.HookTimeout != c.HookTimeout {
		t.Errorf("alerter %+v", a)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	_, err := LoadConfig(envOf(map[string]string{
		"SCALR_BACKUP_SCHEDULE":        "every night",
		"SCALR_BACKUP_DRILL_SCHEDULE":  "0 5 31 2 *",
		"SCALR_BACKUP_KEEP_DAILY":      "-5",
		"SCALR_BACKUP_KEEP_WEEKLY":     "four",
		"SCALR_BACKUP_PATTERNS":        "scalr-[-db",
		"SCALR_BACKUP_ALL_DATABASES":   "maybe",
		"SCALR_BACKUP_STALE_AFTER":     "soon",
		"SCALR_BACKUP_HOOK_TIMEOUT":    "0",
		"SCALR_BACKUP_WEBHOOK_URL":     "ftp://user:hunter2@example.invalid/hook",
		"SCALR_BACKUP_HEALTHCHECK_URL": "hc-ping.com/secret-uuid",
		"SCALR_BACKUP_METRICS_ADDR":    "9187",
		"SCALR_BACKUP_TEXTFILE":        "/tmp/metrics.txt",
		"SCALR_BACKUP_LOG_FORMAT":      "xml",
		"SCALR_BACKUP_HOST":            "two words",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		`SCALR_BACKUP_SCHEDULE="every night": not a cron schedule`,
		`SCALR_BACKUP_DRILL_SCHEDULE="0 5 31 2 *": this schedule never fires`,
		`SCALR_BACKUP_KEEP_DAILY="-5": want a count`,
		`SCALR_BACKUP_KEEP_WEEKLY="four": want a count`,
		`SCALR_BACKUP_PATTERNS="scalr-[-db": not a valid name pattern`,
		`SCALR_BACKUP_ALL_DATABASES="maybe": want true or false`,
		`SCALR_BACKUP_STALE_AFTER="soon": want a duration`,
		`SCALR_BACKUP_HOOK_TIMEOUT="0": want a positive duration`,
		`SCALR_BACKUP_WEBHOOK_URL: want an http:// or https:// URL`,
		`SCALR_BACKUP_HEALTHCHECK_URL: want an http:// or https:// URL`,
		`SCALR_BACKUP_METRICS_ADDR="9187": want host:port`,
		`SCALR_BACKUP_TEXTFILE="/tmp/metrics.txt": node_exporter's textfile collector reads only files ending in .prom`,
		`SCALR_BACKUP_LOG_FORMAT="xml"`,
		`SCALR_BACKUP_HOST="two words"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	for _, secret := range []string{"hunter2", "secret-uuid"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error repeats a secret %q:\n%s", secret, msg)
		}
	}

	_, err = LoadConfig(envOf(map[string]string{"SCALR_BACKUP_KEEP_DAILY": "0", "SCALR_BACKUP_KEEP_WEEKLY": "0", "SCALR_BACKUP_KEEP_MONTHLY": "0"}))
	if err == nil || !strings.Contains(err.Error(), "would keep nothing") {
		t.Errorf("empty policy: %v", err)
	}
}

func TestParseSchedule(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for spec, next := range map[string]time.Time{
		"0 3 * * *":                       time.Date(2026, 5, 2, 3, 0, 0, 0, time.UTC),
		"0 5 1 * *":                       time.Date(2026, 6, 1, 5, 0, 0, 0, time.UTC),
		"*/10 * * * * *":                  base.Add(10 * time.Second),
		"@every 1s":                       base.Add(time.Second),
		"@daily":                          time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC),
		"CRON_TZ=Europe/Berlin 0 3 * * *": time.Date(2026, 5, 2, 1, 0, 0, 0, time.UTC),
	} {
		s, err := ParseSchedule(spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		if got := s.Next(base); !got.Equal(next) {
			t.Errorf("%q: next %s, want %s", spec, got, next)
		}
	}
	for _, bad := range []string{"", "* * *", "61 * * * *", "@fortnightly"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if d, err := ParseDuration("3d"); err != nil || d != 72*time.Hour {
		t.Errorf("3d: %v %v", d, err)
	}
}
