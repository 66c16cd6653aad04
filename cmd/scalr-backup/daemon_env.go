package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/nightly"
)

// The environment of the daemon's own flags, for compose users who do not
// edit `command:`. Flags win.
const (
	envRunNow        = "SCALR_BACKUP_RUN_NOW"
	envShutdownGrace = "SCALR_BACKUP_SHUTDOWN_GRACE"
)

// repositoryEnvironment lists the variables every repository command reads:
// restic's own, the storage's (S3 credentials, retries) and the Docker
// engine's.
func repositoryEnvironment() []nightly.Env {
	return []nightly.Env{
		{Name: "RESTIC_REPOSITORY", Meaning: "repository location: a path, local:PATH, s3:HOST/BUCKET[/PREFIX] or sftp:USER@HOST:PATH / sftp://USER@HOST:PORT/PATH (--repo)"},
		{Name: "RESTIC_REPOSITORY_FILE", Meaning: "file holding the repository location (--repository-file)"},
		{Name: "RESTIC_PASSWORD_FILE", Meaning: "file holding the repository password: the whole file, white space trimmed (--password-file); compose.yaml sets it to its secret"},
		{Name: "RESTIC_PASSWORD_COMMAND", Meaning: "shell command that prints the password (--password-command)"},
		{Name: "RESTIC_PASSWORD", Meaning: "the password itself, when neither a file nor a command is set"},
		{Name: "RESTIC_COMPRESSION", Default: "auto", Meaning: "compression of new data: auto, off or max (--compression)"},
		{Name: "RESTIC_PACK_SIZE", Default: "16", Meaning: "target pack size in MiB, 4 to 128 (--pack-size)"},
		{Name: "RESTIC_HOST", Meaning: "host name recorded in snapshots when SCALR_BACKUP_HOST is unset"},
		{Name: "AWS_ACCESS_KEY_ID", Meaning: "S3 key ID"},
		{Name: "AWS_SECRET_ACCESS_KEY", Meaning: "S3 secret key"},
		{Name: "AWS_SESSION_TOKEN", Meaning: "S3 session token of temporary credentials"},
		{Name: "AWS_DEFAULT_REGION", Meaning: "S3 region (R2 and B2 take it from the endpoint; AWS S3 wants it)"},
		{Name: "AWS_SHARED_CREDENTIALS_FILE", Default: "~/.aws/credentials", Meaning: "S3 credentials file, read when the keys above are unset"},
		{Name: "AWS_PROFILE", Default: "default", Meaning: "profile of the credentials file"},
		{Name: "AWS_CONTAINER_CREDENTIALS_FULL_URI", Meaning: "container role credentials (set by the platform)"},
		{Name: "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", Meaning: "container role credentials (set by the platform)"},
		{Name: "AWS_WEB_IDENTITY_TOKEN_FILE", Meaning: "web-identity role token (set by the platform)"},
		{Name: "SSH_AUTH_SOCK", Meaning: "SFTP: the ssh-agent whose keys are offered first (key files: -o sftp.identity, else ~/.ssh/config's IdentityFile, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa)"},
		{Name: "SCALR_BACKUP_RETENTION_LOCK", Meaning: "S3 Object Lock retention of every object written but locks/, like -o s3.retention=30d (days, or a duration like 36h); each pass extends what the kept snapshots need. -o s3.retention-mode=compliance changes the mode from governance"},
		{Name: open.EnvRetryMaxAttempts, Default: "10", Meaning: "most tries of one storage request (1 turns retries off)"},
		{Name: open.EnvRetryMaxElapsed, Default: "5m", Meaning: "longest one storage operation may spend retrying, waits included"},
		{Name: open.EnvRetryInitialDelay, Default: "500ms", Meaning: "wait before the second try; each further wait doubles"},
		{Name: open.EnvRetryMaxDelay, Default: "30s", Meaning: "longest single wait between tries"},
		{Name: "DOCKER_HOST", Default: "unix:///var/run/docker.sock", Meaning: "the Docker engine (compose.socket-proxy.yaml sets tcp://docker-socket-proxy:2375)"},
	}
}

// daemonFlagEnvironment lists the variables of the daemon's own flags that
// nightly.Environment does not.
func daemonFlagEnvironment() []nightly.Env {
	return []nightly.Env{
		{Name: envRunNow, Default: "false", Meaning: "daemon: run a pass at once at start, then follow the schedule (--run-now)"},
		{Name: envShutdownGrace, Default: "0s", Meaning: "daemon: on SIGTERM, let a running pass go on this long before abandoning it (--shutdown-grace); keep it below the container's stop timeout (compose stop_grace_period)"},
	}
}

// daemonEnvironment is every variable the daemon reads, as `daemon --help`
// lists them; deploy/env.example names the same ones (a test checks).
func daemonEnvironment() []nightly.Env {
	var all []nightly.Env
	all = append(all, repositoryEnvironment()...)
	all = append(all, nightly.Environment()...)
	return append(all, daemonFlagEnvironment()...)
}

// envTableOf formats variables as envTable does.
func envTableOf(envs []nightly.Env) string {
	var b strings.Builder
	for _, e := range envs {
		def := e.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(&b, "  %s (default %s)\n      %s\n", e.Name, def, e.Meaning)
	}
	return strings.TrimRight(b.String(), "\n")
}

// fromEnv fills the options whose flags were not given from their
// variables.
func (o *daemonOptions) fromEnv(getenv func(string) string, flags *pflag.FlagSet) error {
	if v := strings.TrimSpace(getenv(envRunNow)); v != "" && !flags.Changed("run-now") {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s=%q: want true or false", envRunNow, v)
		}
		o.runNow = b
	}
	if v := strings.TrimSpace(getenv(envShutdownGrace)); v != "" && !flags.Changed("shutdown-grace") {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%s=%q: want a duration like 30s or 2m", envShutdownGrace, v)
		}
		o.shutdownGrace = d
	}
	return nil
}
