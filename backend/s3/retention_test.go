package s3

import (
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
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

func TestVersionTime(t *testing.T) {
	// versitygw's IDs (seen in a run): made at 14:49:09.38, 14:49:11.39
	// and, a delete marker, 14:49:13.39 (about); the LastModified it listed were
	// 14:49:11, 14:49:13 and 14:49:11.386.
	listed := time.Date(2026, 11, 27, 14, 49, 13, 0, time.UTC)
	for id, want := range map[string]string{
		"01M8EQPK064A8EKE0DEAJCWTX0": "14:49:09.38",
		"01M8EQPMYWN6HZ55G0E1HASN08": "14:49:11.38",
		"01M8EQPPXNSAE4XJZG7E7BVRHV": "14:49:13.39",
	} {
		got := versionTime(minio.ObjectInfo{VersionID: id, LastModified: listed})
		if s := got.Format("15:04:05.00"); s != want {
			t.Errorf("versionTime(%s) = %s, want %s", id, s, want)
		}
	}
	// Not ULIDs: the listed time.
	for _, id := range []string{"3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "null", "", "b1946ac9-2c81-4d35-8f4f-ffb1d9f6d7a1"} {
		if got := versionTime(minio.ObjectInfo{VersionID: id, LastModified: listed}); !got.Equal(listed) {
			t.Errorf("versionTime(%q) = %v, want the listed time", id, got)
		}
	}
}
