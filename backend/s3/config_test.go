package s3

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend"
)

func TestParseConfig(t *testing.T) {
	cfg := func(endpoint, bucket, prefix string, mods ...func(*Config)) Config {
		c := Config{Endpoint: endpoint, Bucket: bucket, Prefix: prefix, BucketLookup: "auto", Connections: 5}
		for _, m := range mods {
			m(&c)
		}
		return c
	}
	http := func(c *Config) { c.UseHTTP = true }
	r2 := func(c *Config) { c.Region, c.BucketLookup = "auto", "path" }
	b2 := func(region string) func(*Config) {
		return func(c *Config) { c.Region, c.BucketLookup = region, "path" }
	}
	tests := []struct {
		in   string
		want Config
	}{
		// URL forms.
		{"https://hostname/foobar", cfg("hostname", "foobar", "")},
		{"https://hostname:9999/foobar", cfg("hostname:9999", "foobar", "")},
		{"https://hostname:9999/foobar/", cfg("hostname:9999", "foobar", "")},
		{"https://hostname/foobar/prefix/directory", cfg("hostname", "foobar", "prefix/directory")},
		{"https://hostname/foobar/prefix/directory/", cfg("hostname", "foobar", "prefix/directory")},
		{"http://hostname:9999/foobar", cfg("hostname:9999", "foobar", "", http)},
		{"http://127.0.0.1:7070/bucket/a/b", cfg("127.0.0.1:7070", "bucket", "a/b", http)},
		// Host forms (HTTPS).
		{"hostname.foo/foobar", cfg("hostname.foo", "foobar", "")},
		{"hostname.foo/foobar/prefix/directory", cfg("hostname.foo", "foobar", "prefix/directory")},
		{"hostname.foo:9000/foobar/", cfg("hostname.foo:9000", "foobar", "")},
		{"eu-central-1/bucketname/prefix/directory/", cfg("eu-central-1", "bucketname", "prefix/directory")},
		{"//eu-central-1/bucketname", cfg("eu-central-1", "bucketname", "")}, // s3://…
		{"//eu-central-1/bucketname/prefix/directory", cfg("eu-central-1", "bucketname", "prefix/directory")},
		{"s3.amazonaws.com/bucket", cfg("s3.amazonaws.com", "bucket", "")},
		{"s3.amazonaws.com/bucket/restic/repo", cfg("s3.amazonaws.com", "bucket", "restic/repo")},
		{"s3.eu-west-1.amazonaws.com/bucket", cfg("s3.eu-west-1.amazonaws.com", "bucket", "")},
		{"httpbin.example/bucket", cfg("httpbin.example", "bucket", "")},
		// Prefix cleaning.
		{"host/bucket/a//b/./c/", cfg("host", "bucket", "a/b/c")},
		{"host/bucket//", cfg("host", "bucket", "")},
		{"host/bucket/.", cfg("host", "bucket", "")},
		// Cloudflare R2: region auto, path style, no other setting.
		{"https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com/backups",
			cfg("0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com", "backups", "", r2)},
		{"https://0123456789abcdef.r2.cloudflarestorage.com/backups/db/prod",
			cfg("0123456789abcdef.r2.cloudflarestorage.com", "backups", "db/prod", r2)},
		{"0123456789abcdef.eu.r2.cloudflarestorage.com/backups",
			cfg("0123456789abcdef.eu.r2.cloudflarestorage.com", "backups", "", r2)},
		{"https://ACCOUNT.R2.CloudflareStorage.com:443/backups",
			cfg("ACCOUNT.R2.CloudflareStorage.com:443", "backups", "", r2)},
		// Backblaze B2: the region is in the host.
		{"s3.us-west-004.backblazeb2.com/my-bucket", cfg("s3.us-west-004.backblazeb2.com", "my-bucket", "", b2("us-west-004"))},
		{"https://s3.eu-central-003.backblazeb2.com/my-bucket/restic",
			cfg("s3.eu-central-003.backblazeb2.com", "my-bucket", "restic", b2("eu-central-003"))},
		// Look-alikes get no provider defaults.
		{"r2.cloudflarestorage.com.example/bucket", cfg("r2.cloudflarestorage.com.example", "bucket", "")},
		{"s3.backblazeb2.com/bucket", cfg("s3.backblazeb2.com", "bucket", "")},
	}
	for _, tt := range tests {
		got, err := ParseConfig(tt.in)
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseConfig(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
		}
		// Location gives a string that parses to the same config.
		again, err := ParseConfig(strings.TrimPrefix(got.Location(), "s3:"))
		if err != nil || again != got {
			t.Errorf("ParseConfig(%q).Location() = %q does not parse back: %v, %v", tt.in, got.Location(), again, err)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"/bucket",
		"hostname",
		"hostname/",
		"//hostname",
		"https://hostname",
		"https://hostname/",
		"https:///bucket",
		"http://host name/bucket",
	} {
		if cfg, err := ParseConfig(in); err == nil {
			t.Errorf("ParseConfig(%q) = %v, want an error", in, cfg)
		}
	}
	// Credentials in the URL are refused without being repeated.
	_, err := ParseConfig("https://AKIDEXAMPLE:wJalrXUtnFEMI@host/bucket")
	if err == nil || strings.Contains(err.Error(), "wJalrXUtnFEMI") {
		t.Errorf("ParseConfig with credentials in the URL: %v", err)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestApplyEnv(t *testing.T) {
	vars := env(map[string]string{
		"AWS_ACCESS_KEY_ID":     "AKID",
		"AWS_SECRET_ACCESS_KEY": "SECRET",
		"AWS_SESSION_TOKEN":     "TOKEN",
		"AWS_DEFAULT_REGION":    "eu-west-1",
	})
	cfg, _ := ParseConfig("s3.amazonaws.com/bucket")
	cfg.ApplyEnv(vars)
	if cfg.KeyID != "AKID" || cfg.Secret != "SECRET" || cfg.SessionToken != "TOKEN" || cfg.Region != "eu-west-1" {
		t.Errorf("after ApplyEnv: %#v (secret %q)", cfg, cfg.Secret)
	}

	// A provider's region wins over AWS_DEFAULT_REGION.
	for loc, region := range map[string]string{
		"https://acct.r2.cloudflarestorage.com/bkt": "auto",
		"s3.us-west-004.backblazeb2.com/bkt":        "us-west-004",
	} {
		cfg, _ := ParseConfig(loc)
		cfg.ApplyEnv(vars)
		if cfg.Region != region {
			t.Errorf("%s: region %q after ApplyEnv, want %q", loc, cfg.Region, region)
		}
	}

	// Nothing in the environment: nothing changes.
	cfg, _ = ParseConfig("host/bucket")
	before := cfg
	cfg.ApplyEnv(env(nil))
	if cfg != before {
		t.Errorf("ApplyEnv with an empty environment changed %v to %v", before, cfg)
	}
}

func TestApplyOption(t *testing.T) {
	cfg, _ := ParseConfig("https://acct.r2.cloudflarestorage.com/bkt")
	for _, o := range [][2]string{
		{"s3.region", "us-east-1"},
		{"s3.bucket-lookup", "DNS"},
		{"s3.connections", "12"},
	} {
		if err := cfg.ApplyOption(o[0], o[1]); err != nil {
			t.Errorf("ApplyOption(%s=%s): %v", o[0], o[1], err)
		}
	}
	if cfg.Region != "us-east-1" || cfg.BucketLookup != "dns" || cfg.Connections != 12 {
		t.Errorf("after options: %v", cfg)
	}
	for _, o := range [][2]string{
		{"s3.bucket-lookup", "virtual"},
		{"s3.connections", "0"},
		{"s3.connections", "-3"},
		{"s3.connections", "many"},
		{"s3.storage-class", "STANDARD"},
		{"s3.list-objects-v1", "true"},
		{"region", "us-east-1"},
		{"sftp.command", "ssh"},
	} {
		if err := cfg.ApplyOption(o[0], o[1]); err == nil {
			t.Errorf("ApplyOption(%s=%s): no error", o[0], o[1])
		}
	}
}

func TestConfigHidesSecrets(t *testing.T) {
	cfg, _ := ParseConfig("https://host/bucket/prefix")
	cfg.ApplyEnv(env(map[string]string{
		"AWS_ACCESS_KEY_ID":     "AKIDEXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
		"AWS_SESSION_TOKEN":     "FQoGZXIvYXdzEXAMPLETOKEN",
	}))
	for _, s := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v", &cfg), cfg.Location(),
	} {
		if strings.Contains(s, "wJalrXUtnFEMI") || strings.Contains(s, "FQoGZXIv") {
			t.Errorf("secret printed: %s", s)
		}
	}
	if want := "s3:host/bucket/prefix"; cfg.Location() != want {
		t.Errorf("Location() = %q, want %q", cfg.Location(), want)
	}
	be, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if be.Location() != "s3:host/bucket/prefix" {
		t.Errorf("backend Location() = %q", be.Location())
	}
}

func TestOpenValidates(t *testing.T) {
	base, _ := ParseConfig("http://127.0.0.1:1/bucket")
	for name, mod := range map[string]func(*Config){
		"no credentials": func(c *Config) {},
		"no secret":      func(c *Config) { c.KeyID = "AKID" },
		"no key id":      func(c *Config) { c.Secret = "very-secret-value" },
		"no bucket":      func(c *Config) { c.KeyID, c.Secret, c.Bucket = "AKID", "very-secret-value", "" },
		"bad lookup":     func(c *Config) { c.KeyID, c.Secret, c.BucketLookup = "AKID", "very-secret-value", "sideways" },
	} {
		cfg := base
		mod(&cfg)
		_, err := Open(context.Background(), cfg)
		if err == nil {
			t.Errorf("%s: Open succeeded", name)
		} else if strings.Contains(err.Error(), "very-secret-value") {
			t.Errorf("%s: error shows the secret: %v", name, err)
		}
	}
}

func TestCheckHandle(t *testing.T) {
	for _, name := range []string{"../config", "a/b", "..", "."} {
		if err := checkHandle(backend.Handle{Type: backend.KeyFile, Name: name}); err == nil {
			t.Errorf("checkHandle(keys/%q): no error", name)
		}
	}
	if err := checkHandle(backend.Handle{Type: backend.KeyFile, Name: "tmp-file"}); err != nil {
		t.Error(err)
	}
}

func TestParseConfigRejectsInvalidBucket(t *testing.T) {
	for _, loc := range []string{"http://127.0.0.1:9000/b1", "host/ab", "host/-x-"} {
		if _, err := ParseConfig(loc); err == nil || !strings.Contains(err.Error(), "bucket name") {
			t.Errorf("%s: got %v, want a bucket name error", loc, err)
		}
	}
}
