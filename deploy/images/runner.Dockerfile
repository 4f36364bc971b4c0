# The runner image: the `stowage` binary plus the builtin plugins.
# Build from the repository root after `./dev build` (or a release build):
#   docker build -f deploy/images/runner.Dockerfile -t stowage-runner:0.1.0 \
#     --build-context target=/var/cache/stowage/target .
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=target host/release/stowage /usr/bin/stowage
COPY --from=target plugins/wasm32-wasip2/release/postgres.wasm plugins/wasm32-wasip2/release/generator.wasm \
     /usr/lib/stowage/plugins/
USER 65532:65532
ENTRYPOINT ["/usr/bin/stowage"]
