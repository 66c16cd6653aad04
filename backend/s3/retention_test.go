package s3

import (
	"strings"
	"testing"
	"time"
)

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "36h": 36 * time.Hour, "90s": 90 * time.Second, "1d12h": 36 * time.Hour,
		"": 0, "0": 0, " 7d ": 7 * 24 * time.Hour,
	} {
		got, err := ParseRetention(in)
		if err != nil || got != want {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"d", "-1d", "30x", "1.5d", "-5s", "30 days"} {
		if _, err := ParseRetention(in); err == nil {
			t.Errorf("ParseRetention(%q): no error", in)
		}
	}
}

func TestRetentionSettings(t *testing.T) {
	env := map[string]string{"SCALR_BACKUP_RETENTION_LOCK": "2d", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
	cfg, err := ParseConfig("http://127.0.0.1:9000/bucket")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyEnv(func(k string) string { return env[k] })
	if cfg.Retention != 48*time.Hour {
		t.Fatalf("retention from the environment: %v", cfg.Retention)
	}
	// The option wins over the environment.
	if err := cfg.ApplyOption("s3.retention", "30d"); err != nil || cfg.Retention != 30*24*time.Hour {
		t.Fatalf("s3.retention=30d: %v, %v", cfg.Retention, err)
	}
	if err := cfg.ApplyOption("s3.retention-mode", "compliance"); err != nil || cfg.RetentionMode != "COMPLIANCE" {
		t.Fatalf("s3.retention-mode=compliance: %q, %v", cfg.RetentionMode, err)
	}
	if err := cfg.ApplyOption("s3.retention-mode", "legal-hold"); err == nil {
		t.Error("s3.retention-mode=legal-hold: no error")
	}
	// A bad value in the environment fails Open, naming the variable.
	bad, _ := ParseConfig("http://127.0.0.1:9000/bucket")
	env["SCALR_BACKUP_RETENTION_LOCK"] = "forever"
	bad.ApplyEnv(func(k string) string { return env[k] })
	if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "SCALR_BACKUP_RETENTION_LOCK") {
		t.Errorf("bad SCALR_BACKUP_RETENTION_LOCK: %v", err)
	}
}
