//go:build linux

package testenv

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPostgresShapes: each image shape starts the way its kind of image
// does, and the container helpers reach its server whatever the password
// rules and the port.
func TestPostgresShapes(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	start := time.Now()
	for _, shape := range PostgresShapes {
		d.PostgresImageShape(t, DefaultPostgresMajor, shape)
	}
	t.Logf("shapes built in %s", time.Since(start).Round(time.Millisecond))
	inspect := func(name, format string) string { return d.CLI(t, "image", "inspect", "--format", format, name) }
	if got := inspect(PostgresImageNameShape(15, ShapeNoCmd), "{{json .Config.Entrypoint}} {{len .Config.Cmd}}"); got != `["postgres-server"] 0` {
		t.Errorf("nocmd image config: %s", got)
	}
	if got := inspect(PostgresImageNameShape(15, ShapeOfficial), "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{len .RootFS.Layers}}"); got != `["docker-entrypoint.sh"] ["postgres"] 2` {
		t.Errorf("official image config: %s", got)
	}

	t.Run("official-secret-scram-port", func(t *testing.T) {
		c := d.RunPostgresWith(t, "scalr-testenv-official-db", PostgresOptions{
			Shape: ShapeOfficial,
			Env: map[string]string{"POSTGRES_USER_FILE": "/run/secrets/user", "POSTGRES_PASSWORD_FILE": "/run/secrets/pw",
				"POSTGRES_DB": "app", "POSTGRES_INITDB_ARGS": "--auth-local=scram-sha-256 --no-sync"},
			Files: map[string]string{"/run/secrets/user": "owner\n", "/run/secrets/pw": "file secret\n"},
			Cmd:   []string{"postgres", "-c", "port=5433"},
			Port:  5433,
		})
		if c.User != "owner" || c.Password != "file secret" || c.DB != "app" {
			t.Fatalf("container %+v", c)
		}
		if got := c.Psql(t, "", "SELECT current_user, current_setting('port'), (SELECT auth_method FROM pg_hba_file_rules WHERE type = 'local' LIMIT 1)"); got != "owner|5433|scram-sha-256" {
			t.Errorf("server: %q", got)
		}
		// Without the password, local connections are refused.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := d.Run(ctx, nil, "exec", c.Name, "psql", "-X", "-w", "-p", "5433", "-U", "owner", "-d", "app", "-c", "select 1")
		if err == nil || !strings.Contains(err.Error(), "no password supplied") {
			t.Errorf("no password: %v %s", err, out)
		}
		// The set-up server ran on the default socket, no TCP, before the
		// final one.
		if logs := c.Logs(t); !strings.Contains(logs, "PostgreSQL init process complete") || !strings.Contains(logs, `listening on Unix socket "/var/run/postgresql/.s.PGSQL.5432"`) {
			t.Errorf("log:\n%s", logs)
		}
	})

	t.Run("nocmd", func(t *testing.T) {
		c := d.RunPostgresWith(t, "scalr-testenv-nocmd-db", PostgresOptions{Shape: ShapeNoCmd, Cmd: []string{},
			Env: map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}})
		if got := d.CLI(t, "inspect", "--format", "{{len .Config.Cmd}}", c.Name); got != "0" {
			t.Errorf("command %s", got)
		}
		if got := c.Psql(t, "", "SELECT current_database()"); got != "app" {
			t.Errorf("database %q", got)
		}
		// "postgres" as an argument: the server refuses it and the
		// container stops.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		name := "scalr-testenv-nocmd-bad-db"
		d.CLI(t, "run", "--detach", "--network", "none", "--name", name, "--env", "POSTGRES_PASSWORD=x",
			PostgresImageNameShape(15, ShapeNoCmd), "postgres", "-c", "fsync=off")
		defer d.CLI(t, "rm", "--force", name)
		for {
			if st := d.CLI(t, "inspect", "--format", "{{.State.Status}}", name); st == "exited" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("the container with postgres as an argument did not stop")
			case <-time.After(200 * time.Millisecond):
			}
		}
		if logs, _ := d.Command(ctx, "logs", name).CombinedOutput(); !strings.Contains(string(logs), `invalid argument: "postgres"`) {
			t.Errorf("log:\n%s", logs)
		}
	})
}
