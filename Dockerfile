# rentcache: multi-stage build; the runtime image holds one static-ish binary and the config.
#
#   docker build -t rentcache .
#   docker run -p 8080:8080 -e RENTMAN_TOKEN=... \
#     -v $PWD/conf/rentcache.yaml:/etc/rentcache/rentcache.yaml:ro rentcache
#
# The config is read from /etc/rentcache/rentcache.yaml (mount your own there).

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libturbojpeg0-dev libwebp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY conf conf
RUN cargo build --release --locked --bin rentcache \
 && strip target/release/rentcache

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libturbojpeg0 libwebp7 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rentcache
COPY --from=build /src/target/release/rentcache /usr/local/bin/rentcache
COPY conf/rentcache.yaml /etc/rentcache/rentcache.yaml
USER rentcache
# memory.body_dir: auto keeps large bodies in unnamed files in /var/tmp when it is on a disk
# filesystem: a volume puts it on the host's (an overlay may not make unnamed files; then
# memory files are used, as the log says at start).
VOLUME ["/var/tmp"]
# 8080: the public listener (server.listen). 9091: the admin API, reachable from outside the
# container only with `admin.listen: "0.0.0.0:9091"` in the mounted config (default: loopback)
# and RENTCACHE_ADMIN_TOKEN set.
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/rentcache"]
CMD ["serve", "-c", "/etc/rentcache/rentcache.yaml"]
