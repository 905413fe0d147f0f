# rollwise operator image.
#   docker build -t ghcr.io/rollwise/rollwise:0.1.0 .
# The image runs `rollwise run` as a non-root user on a distroless base; the
# in-memory demo (feature `demo`) is left out of it.

FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --no-default-features --bin rollwise \
 && strip target/release/rollwise

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rollwise /usr/local/bin/rollwise
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rollwise", "run"]
