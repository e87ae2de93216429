# turnout container image.
#
#   docker build -t turnout .
#   docker run --rm turnout check --config /etc/turnout/turnout.toml
#
# The baked-in config is config/turnout.example.toml. Its listen addresses (proxy
# 127.0.0.1:6380, admin 127.0.0.1:9900) and endpoints are loopback on purpose: turnout is a
# sidecar that shares the application's network namespace (same Kubernetes pod, or
# `docker run --network container:<app>`), so the app reaches it on localhost and nothing
# else can. Mount your own config over /etc/turnout/turnout.toml for real endpoints, and
# only listen on a non-loopback address if you really need to (the admin API then requires
# a token, see [admin].token_env).

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# Build context = the repository minus target/ and .git (see .dockerignore).
COPY . .
# --locked: build exactly the dependency versions in Cargo.lock.
RUN cargo build --release --locked

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 turnout \
 && useradd --system --uid 10001 --gid turnout --home-dir /var/lib/turnout \
            --shell /usr/sbin/nologin turnout \
 && install -d -o turnout -g turnout -m 0750 /var/lib/turnout

COPY --from=builder /src/target/release/turnout /usr/local/bin/turnout
COPY config/turnout.example.toml /etc/turnout/turnout.toml

# The route state file ([state].path = "turnout-state.json", relative) lands in the working
# directory. Mount a volume at /var/lib/turnout so routes survive a container restart.
WORKDIR /var/lib/turnout
USER 10001:10001

# 6380: Redis protocol (proxy.listen), 9900: admin HTTP API (admin.listen).
EXPOSE 6380 9900

# turnout exits cleanly on SIGTERM (Docker's default stop signal) after in-flight commands
# finish, within [proxy].shutdown_grace; keep `docker stop -t` above that.
ENTRYPOINT ["turnout"]
CMD ["run", "--config", "/etc/turnout/turnout.toml"]
