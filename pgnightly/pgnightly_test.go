package pgnightly

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

// TestDiscoverWithoutEngine: an engine that is not there is an error
// naming it, and each call connects again (a daemon started before the
// engine recovers by itself).
func TestDiscoverWithoutEngine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	env := map[string]string{"DOCKER_HOST": "tcp://" + addr}
	w := New(nightly.Config{Host: "h"}, Options{Getenv: func(k string) string { return env[k] }})
	defer w.Close()
	for i := 0; i < 2; i++ {
		_, err := w.Discover(context.Background())
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Fatalf("call %d: %v; want an error naming %s", i, err, addr)
		}
		if w.docker != nil {
			t.Fatalf("call %d: a failed connection was kept", i)
		}
	}
}

// TestBackupUndiscovered: a target that discovery did not produce is
// refused by name, before any Docker connection.
func TestBackupUndiscovered(t *testing.T) {
	w := New(nightly.Config{}, Options{Getenv: func(string) string { return "tcp://127.0.0.1:1" }})
	_, err := w.Backup(context.Background(), repotest.New(t), nightly.Target{Name: "scalr-x-db"})
	if err == nil || !strings.Contains(err.Error(), "scalr-x-db") {
		t.Fatalf("%v; want an error naming the container", err)
	}
}

func TestServiceWiring(t *testing.T) {
	w := New(nightly.Config{Host: "h"}, Options{})
	s := w.Service(nil, nil)
	if s.Discoverer != w || s.Backup == nil || s.Drill == nil || s.Logger == nil || s.Config.Host != "h" {
		t.Fatalf("service not wired: %+v", s)
	}
}
