# The runner image: the `stowage` binary, its shared libraries, CA roots and the builtin
# plugins in /usr/lib/stowage/plugins; no shell. `./dev images` (scripts/images.sh)
# assembles rootfs/ in the build context and builds this with buildah; `docker build`
# takes the same context.
FROM scratch
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/bin/stowage"]
