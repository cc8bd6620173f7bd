#!/usr/bin/env bash
# Interleaved A/B of two revisions: bench/ab.sh <rev-a> <rev-b> <out-dir> [pairs] -- [npm run bench flags]
# Builds each revision in its own worktree (sharing this checkout's node_modules), then runs the bench
# on A and B alternately (A B B A A B …), one report per run in <out-dir>, and prints the medians.
set -euo pipefail
a=$1 b=$2 out=$(realpath -m "$3") pairs=3
shift 3
if [[ ${1:-} =~ ^[0-9]+$ ]]; then pairs=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
mkdir -p "$out"
trap 'git -C "$root" worktree remove --force "$work/a" >/dev/null 2>&1 || true; git -C "$root" worktree remove --force "$work/b" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for side in a b; do
  rev=${!side}
  git -C "$root" worktree add --detach "$work/$side" "$rev" >/dev/null
  ln -s "$root/node_modules" "$work/$side/node_modules"
  (cd "$work/$side" && npx tsc -p tsconfig.json)
done
for ((i = 1; i <= pairs; i++)); do
  if (( i % 2 )); then order="a b"; else order="b a"; fi
  for side in $order; do
    echo "pair $i: $side"
    (cd "$work/$side" && npx tsx bench/run.ts --label "$side-$i" --out "$out" "$@" >"$out/$side-$i.log" 2>&1)
  done
done
npx tsx "$root/bench/ab-summary.ts" "$out"
