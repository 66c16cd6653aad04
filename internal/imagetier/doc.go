// Package imagetier holds the image/compose test tier: its test builds the
// shipped Dockerfile, unchanged, on stand-in base images made locally
// (scripts/setup-image-tier.sh: debian:bookworm-slim from debootstrap,
// golang:GO_VERSION-bookworm from that and this machine's Go toolchain) in a
// private Docker engine, and brings up deploy/compose.yaml with Debian's
// docker-compose beside two Postgres containers: discovery, a scheduled
// pass, the container's health, restore and drill through `compose run`,
// and a `compose stop` that leaves no lock.
//
// It runs under `go test ./...` as root with the tools scripts/test-setup.sh
// installs; with SCALR_BACKUP_REQUIRE_INTEGRATION=1 a missing tool fails it.
package imagetier
