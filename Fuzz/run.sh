#!/usr/bin/env bash
# Builds and runs Converge's libFuzzer targets. See README.md.
#
#   run.sh --list                 the fuzz targets, one per line
#   run.sh TARGET SECONDS         build, then fuzz TARGET for SECONDS
#   run.sh --regressions          build, then replay Corpus/ and Regressions/ on every target
#   run.sh --generate-corpus      build, then rewrite Corpus/<Target>/ from each target's seeds
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SCRATCH=.build-fuzz
BUILD_FLAGS=(-c release --scratch-path "$SCRATCH" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Every Sources/Fuzz* folder but the shared library is a target.
targets() {
    for dir in Sources/Fuzz*/; do
        name=$(basename "$dir")
        [[ $name == FuzzSupport ]] || echo "$name"
    done
}

is_target() {
    local name
    for name in $(targets); do [[ $name == "$1" ]] && return 0; done
    return 1
}

build() {
    local started=$SECONDS
    echo "==> swift build ${BUILD_FLAGS[*]}" >&2
    swift build "${BUILD_FLAGS[@]}" >&2
    echo "==> built in $((SECONDS - started)) s" >&2
    BIN_DIR=$(swift build "${BUILD_FLAGS[@]}" --show-bin-path)
}

# Seed and regression files of a target (not .gitkeep), one per line.
inputs() {
    local dir
    for dir in "Corpus/$1" "Regressions/$1"; do
        [[ -d $dir ]] || continue
        find "$dir" -type f ! -name '.gitkeep' | sort
    done
}

print_hex() {
    echo "---- $1 ($(wc -c <"$1") bytes), hex:"
    od -An -v -tx1 "$1" | tr -d ' \n'
    echo
}

fuzz() {
    local target=$1 seconds=$2
    build
    # Global, for the EXIT trap.
    work=$(mktemp -d "${TMPDIR:-/tmp}/converge-fuzz-$target.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/corpus" "$work/artifacts"
    # A working copy, so that the fuzzer's new inputs never touch the committed corpus.
    inputs "$target" | while read -r file; do cp "$file" "$work/corpus/"; done
    local args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=30 -artifact_prefix="$work/artifacts/")
    [[ -f Dictionaries/$target.dict ]] && args+=(-dict="Dictionaries/$target.dict")
    local status=0
    "$BIN_DIR/$target" "${args[@]}" "$work/corpus" || status=$?
    local crashes=("$work"/artifacts/*)
    if [[ $status -ne 0 || -e ${crashes[0]} ]]; then
        mkdir -p "$SCRATCH/crashes"
        echo "==> $target failed (exit $status)" >&2
        for file in "${crashes[@]}"; do
            [[ -e $file ]] || continue
            print_hex "$file"
            cp "$file" "$SCRATCH/crashes/$target-$(basename "$file")"
        done
        echo "==> crashing inputs kept in Fuzz/$SCRATCH/crashes/; once fixed, add them to Fuzz/Regressions/$target/" >&2
        exit 1
    fi
    echo "==> $target: no crash in $seconds s; corpus grew to $(find "$work/corpus" -type f | wc -l) inputs" >&2
}

regressions() {
    build
    local target failed=0
    for target in $(targets); do
        local files=()
        mapfile -t files < <(inputs "$target")
        if [[ ${#files[@]} -eq 0 ]]; then
            echo "==> $target: no inputs to replay" >&2
            continue
        fi
        echo "==> $target: replaying ${#files[@]} inputs" >&2
        local log
        log=$(mktemp)
        if "$BIN_DIR/$target" -runs=1 "${files[@]}" >"$log" 2>&1; then
            echo "==> $target: ${#files[@]} passed, 0 failed" >&2
        else
            cat "$log" >&2
            local last
            last=$(grep '^Running: ' "$log" | tail -1 | sed 's/^Running: //')
            [[ -n $last && -f $last ]] && print_hex "$last"
            echo "==> $target: FAILED" >&2
            failed=1
        fi
        rm -f "$log"
    done
    return "$failed"
}

generate_corpus() {
    build
    local target
    for target in $(targets); do
        mkdir -p "Corpus/$target"
        find "Corpus/$target" -type f -name 'seed-*' -delete
        "$BIN_DIR/$target" --generate-corpus "Corpus/$target"
    done
}

case "${1:-}" in
    --list) targets ;;
    --regressions) regressions ;;
    --generate-corpus) generate_corpus ;;
    -h|--help|"") usage ;;
    *)
        [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
        is_target "$1" || { echo "unknown target '$1'; targets: $(targets | tr '\n' ' ')" >&2; exit 2; }
        fuzz "$1" "$2"
        ;;
esac
