# The operator image: the `stowage-operator` binary, its shared libraries and CA roots; no
# shell. `./dev images` (scripts/images.sh) assembles rootfs/ in the build context and
# builds this with buildah; `docker build` takes the same context.
FROM scratch
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/bin/stowage-operator"]
CMD ["run"]
