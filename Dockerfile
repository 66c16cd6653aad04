# scalr-backup: the nightly Postgres backup service of a Docker host (ADR 0010).
#
#   docker build -t scalr-backup --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) .
#
# Two stages: the Go toolchain builds one static binary (CGO_ENABLED=0, no libc
# needed), and a small Debian runtime carries it with CA certificates (S3/R2 and
# webhooks over HTTPS), time zone data, and /bin/sh for the SCALR_BACKUP_ON_*
# hook commands. It runs as an unprivileged user.
#
# The Docker socket: the service talks to the engine (discovery, docker exec
# pg_dump, restore drills), which means read/write access to
# /var/run/docker.sock. That socket belongs to root and to the host's "docker"
# group, whose numeric ID differs between hosts. Give the user that group in
# one of two ways:
#   - at run time (preferred, the image stays host-independent): compose
#     `group_add: ["<gid>"]` or `docker run --group-add <gid>`, with
#     <gid> = `stat -c %g /var/run/docker.sock` on the host;
#   - at build time: --build-arg DOCKER_GID=<gid> adds the user to a group of
#     that ID inside the image.
# Access to the socket is root-equivalent on the host (ADR 0010, "Failure
# modes"); deploy/compose.socket-proxy.yaml narrows it with a socket proxy, and
# then no group is needed at all.
#
# No `# syntax=` line on purpose: with it BuildKit pulls a frontend image from
# a registry before building, which fails on a host without registry access,
# and this file needs nothing beyond the built-in frontend.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.buildVersion=${VERSION}" \
      -o /out/scalr-backup ./cmd/scalr-backup \
 && /out/scalr-backup version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*
ARG DOCKER_GID=
RUN groupadd --system --gid 10001 scalr-backup \
 && useradd --system --uid 10001 --gid scalr-backup --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin scalr-backup \
 && if [ -n "$DOCKER_GID" ]; then \
      group=$(getent group "$DOCKER_GID" | cut -d: -f1); \
      if [ -z "$group" ]; then group=docker-host; groupadd --system --gid "$DOCKER_GID" "$group"; fi; \
      usermod --append --groups "$group" scalr-backup; \
    fi
COPY --from=build /out/scalr-backup /usr/local/bin/scalr-backup
# The user alone, no group: `USER name:group` would set the groups to that one
# group and drop the supplementary group DOCKER_GID added above (the socket
# would then be refused). `USER name` takes the groups from /etc/group.
USER scalr-backup
# /metrics and /healthz of the daemon (loopback inside the container unless
# SCALR_BACKUP_METRICS_ADDR says otherwise).
EXPOSE 9187
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/scalr-backup"]
CMD ["daemon"]
