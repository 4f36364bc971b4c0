# The operator image. Build from the repository root after a release build:
#   docker build -f deploy/images/operator.Dockerfile -t stowage-operator:0.1.0 \
#     --build-context target=/var/cache/stowage/target .
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=target host/release/stowage-operator /usr/bin/stowage-operator
USER 65532:65532
ENTRYPOINT ["/usr/bin/stowage-operator"]
CMD ["run"]
