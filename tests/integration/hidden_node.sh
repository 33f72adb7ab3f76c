#!/usr/bin/env bash
# Run a command (a Ray worker node) in this mount namespace with rnnbench's code and state
# hidden, as on another machine: REPO (the checkout the interpreter would import flows,
# modules and datamodules from) and every HIDE folder are covered by empty tmpfs mounts; the
# virtualenv, if it lives inside REPO, is bound back in place (the node's own Python and
# libraries, which every node of a real cluster has installed). Run under
# `unshare -m --propagation private`. Usage: hidden_node.sh REPO VENV STASH [HIDE...] -- CMD...
set -euo pipefail
repo=$1 venv=$2 stash=$3
shift 3
hide=()
while [[ $1 != -- ]]; do hide+=("$1"); shift; done
shift
case "$venv/" in
    "$repo"/*) mount --bind "$venv" "$stash"
               mount -t tmpfs rnnbench-hidden "$repo"
               mkdir -p "$venv"
               mount --bind "$stash" "$venv" ;;
    *) mount -t tmpfs rnnbench-hidden "$repo" ;;
esac
for dir in "${hide[@]}"; do
    mount -t tmpfs rnnbench-hidden "$dir"
done
cd /
# prove it before Ray starts: this node cannot import rnnbench's code or read its state
if "$venv/bin/python" -c "import flows" 2>/dev/null; then
    echo "hiding failed: flows is importable on this node" >&2
    exit 3
fi
for dir in "${hide[@]}"; do
    if [[ -n "$(ls -A "$dir")" ]]; then echo "hiding failed: $dir is visible" >&2; exit 3; fi
done
echo "rnnbench hidden on this node"
exec "$@"
