// A program outside the scalr-backup module that uses only its exported
// API: it opens (or creates) the repository that restic's environment
// names, backs up a generated stream, streams it back and compares, then
// runs one nightly pass over two stand-in targets. It prints one JSON line
// for the test that builds it (internal/outside).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand"
	"os"

	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repoenv"
)

type summary struct {
	Created      bool     `json:"created"`
	SnapshotID   string   `json:"snapshot_id"`
	Written      string   `json:"written_sha256"`
	Read         string   `json:"read_sha256"`
	PassOK       bool     `json:"pass_ok"`
	PassTargets  []string `json:"pass_targets"`
	PassSnapshot []string `json:"pass_snapshots"`
}

func main() {
	ctx := context.Background()
	// Everything from restic's environment: RESTIC_REPOSITORY,
	// RESTIC_PASSWORD, AWS_ACCESS_KEY_ID, ...; a cheap key derivation
	// because this is a test.
	settings := &repoenv.Settings{Init: repo.InitOptions{KDF: &repo.KDFParams{N: 1024, R: 8, P: 1}}}
	opened, err := settings.OpenOrInit(ctx, true)
	if err != nil {
		log.Fatalf("open: %v", err)
	}
	r := opened.Repo
	var out summary
	out.Created = opened.Created

	// Back up 6 MiB of seeded bytes and read them back.
	const size = 6 << 20
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.New(rand.NewSource(7)), size), h)
	res, err := r.BackupStream(ctx, repo.Stream{Name: "outside.bin", Reader: src},
		repo.BackupOptions{Tags: []string{"outside"}, Hostname: "outside-host"})
	if err != nil {
		log.Fatalf("backup: %v", err)
	}
	out.SnapshotID = res.SnapshotID.String()
	out.Written = hex.EncodeToString(h.Sum(nil))

	sn, err := r.FindSnapshot(ctx, "latest", repo.SnapshotFilter{Tags: []string{"outside"}})
	if err != nil {
		log.Fatalf("find snapshot: %v", err)
	}
	node, err := r.FindNode(ctx, sn, "/outside.bin")
	if err != nil {
		log.Fatalf("find file: %v", err)
	}
	f, err := r.OpenFile(ctx, node)
	if err != nil {
		log.Fatalf("open file: %v", err)
	}
	h = sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		log.Fatalf("restore: %v", err)
	}
	f.Close()
	out.Read = hex.EncodeToString(h.Sum(nil))
	if err := r.Close(); err != nil {
		log.Fatalf("close: %v", err)
	}

	// One nightly pass: the Service opens the repository itself; two
	// stand-in targets take the place of Postgres containers.
	cfg, err := nightly.LoadConfig(os.Getenv)
	if err != nil {
		log.Fatalf("config: %v", err)
	}
	cfg.Host = "outside-host"
	svc := &nightly.Service{
		Config: cfg,
		Open:   settings.Open,
		Discoverer: nightly.DiscoverFunc(func(context.Context) ([]nightly.Target, error) {
			return []nightly.Target{{Name: "outside-a"}, {Name: "outside-b"}}, nil
		}),
		Backup: func(ctx context.Context, r *repo.Repository, t nightly.Target) (nightly.BackupResult, error) {
			dump := io.LimitReader(rand.New(rand.NewSource(int64(len(t.Name)))), 1<<20)
			res, err := r.BackupStreams(ctx, t.Name, []repo.Stream{{Name: "data.bin", Reader: dump}},
				repo.BackupOptions{Tags: []string{t.Name}, Hostname: cfg.Host})
			if err != nil {
				return nightly.BackupResult{}, err
			}
			return nightly.BackupResult{SnapshotID: res.SnapshotID, BytesRead: 1 << 20}, nil
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	rep := svc.RunPass(ctx)
	out.PassOK = rep.OK()
	for _, t := range rep.Targets {
		out.PassTargets = append(out.PassTargets, t.Name+":"+string(t.Status))
		out.PassSnapshot = append(out.PassSnapshot, t.SnapshotID)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
	if !rep.OK() {
		fmt.Fprintln(os.Stderr, "the pass failed")
		os.Exit(1)
	}
}
