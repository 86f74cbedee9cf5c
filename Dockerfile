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
EXPOSE 6390 16390
VOLUME /var/lib/flagstaff
ENTRYPOINT ["flagstaff", "--bind", "0.0.0.0", "--data-dir", "/var/lib/flagstaff"]
