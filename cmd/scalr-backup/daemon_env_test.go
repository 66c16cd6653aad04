package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// SCALR_BACKUP_RUN_NOW and SCALR_BACKUP_SHUTDOWN_GRACE set what --run-now
// and --shutdown-grace set; the flags win; bad values are errors naming the
// variable.
func TestDaemonFlagEnvironment(t *testing.T) {
	parse := func(env map[string]string, args ...string) (daemonOptions, error) {
		var o daemonOptions
		fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
		fs.BoolVar(&o.runNow, "run-now", false, "")
		fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 0, "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		err := o.fromEnv(func(k string) string { return env[k] }, fs)
		return o, err
	}
	o, err := parse(map[string]string{envRunNow: "true", envShutdownGrace: "45s"})
	if err != nil || !o.runNow || o.shutdownGrace != 45*time.Second {
		t.Errorf("from the environment: %+v, %v", o, err)
	}
	o, err = parse(map[string]string{envRunNow: "true", envShutdownGrace: "45s"}, "--run-now=false", "--shutdown-grace", "5s")
	if err != nil || o.runNow || o.shutdownGrace != 5*time.Second {
		t.Errorf("flags must win: %+v, %v", o, err)
	}
	o, err = parse(nil)
	if err != nil || o.runNow || o.shutdownGrace != 0 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, env := range []map[string]string{{envRunNow: "soon"}, {envShutdownGrace: "a while"}, {envShutdownGrace: "-1s"}} {
		if _, err := parse(env); err == nil {
			t.Errorf("%v: no error", env)
		}
	}
}
