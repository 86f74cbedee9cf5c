# Multi-stage build: compile with the Rust toolchain, ship a slim runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin flagstaff

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/flagstaff flagstaff \
    && mkdir -p /var/lib/flagstaff && chown flagstaff /var/lib/flagstaff
COPY --from=build /src/target/release/flagstaff /usr/local/bin/flagstaff
USER flagstaff
# RESP, HTTP (OFREP, /metrics, /livez, /readyz), cluster bus.
EXPOSE 6390 7390 16390
# bash's /dev/tcp asks /readyz (no credentials needed); the image has no curl.
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=5 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7390 && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
VOLUME /var/lib/flagstaff
ENTRYPOINT ["flagstaff", "--bind", "0.0.0.0", "--data-dir", "/var/lib/flagstaff"]
