#!/usr/bin/env bash
# Follow docs/plugin-authoring.md word by word in a fresh directory: every ```sh block is
# run in order, every block with `file=PATH` is written to PATH. Fails on the first error.
source "$(dirname "$0")/lib.sh"
guide="$STOWAGE_ROOT/docs/plugin-authoring.md"
work=$(mktemp -d)
# Also stop whatever the guide started there (its servers run with their files in $work).
trap 'pkill -f -- "$work" || true; rm -rf "$work"' EXIT
python3 - "$guide" >"$work/guide.sh" <<'PY'
import re, sys
block, lines = None, []
print("set -euxo pipefail")
for line in open(sys.argv[1]):
    fence = re.match(r"^```(\w*)(.*)$", line.rstrip("\n"))
    if fence and block is None:
        kind, rest = fence.groups()
        target = re.search(r"file=(\S+)", rest)
        block = ("file", target.group(1)) if target else (kind, None)
        lines = []
    elif fence and block is not None:
        if block[0] == "file":
            print(f"cat > {block[1]} <<'STOWAGE_GUIDE_EOF'\n{''.join(lines)}STOWAGE_GUIDE_EOF")
        elif block[0] == "sh":
            print("".join(lines))
        block = None
    elif block is not None:
        lines.append(line)
PY
log "following $guide in $work"
cd "$work"
# A reader's fresh shell: no cargo target directory of ours leaks in.
env -u CARGO_TARGET_DIR STOWAGE_SRC="$STOWAGE_ROOT" PATH="$STOWAGE_HOST_TARGET/debug:$PATH" bash "$work/guide.sh"
log "the guide produced a working plugin"
