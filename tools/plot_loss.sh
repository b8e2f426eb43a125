#!/bin/sh
# Draws the loss curve of a `netgpt train --json-log LOG.jsonl` run: training loss per step and,
# where it was computed, the evaluation loss. Writes OUT.png (default: LOG.png).
#   usage: tools/plot_loss.sh LOG.jsonl [OUT.png]
# Needs gnuplot (Debian: sudo apt-get install gnuplot-nox).
set -e
[ $# -ge 1 ] || { echo "usage: $0 LOG.jsonl [OUT.png]" >&2; exit 2; }
log=$1
out=${2:-${log%.jsonl}.png}
[ -r "$log" ] || { echo "$0: cannot read $log" >&2; exit 1; }
command -v gnuplot >/dev/null 2>&1 || {
    echo "$0: gnuplot not found; install it with: sudo apt-get install gnuplot-nox" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# one "step value" pair per line, pulled out of the JSON objects without a JSON tool
sed -n 's/.*"step":\([0-9]*\),"loss":\([^,}]*\).*/\1 \2/p' "$log" >"$tmp/train.dat"
sed -n 's/.*"step":\([0-9]*\),.*"eval_loss":\([^,}]*\).*/\1 \2/p' "$log" >"$tmp/eval.dat"
[ -s "$tmp/train.dat" ] || { echo "$0: $log has no {\"step\":N,\"loss\":X} lines" >&2; exit 1; }
plots="'$tmp/train.dat' using 1:2 with lines lw 1 title 'train loss'"
[ -s "$tmp/eval.dat" ] && plots="$plots, '$tmp/eval.dat' using 1:2 with linespoints pt 7 lw 2 title 'eval loss'"
gnuplot <<GP
set terminal pngcairo size 900,540 noenhanced
set output '$out'
set title '$log'
set xlabel 'step'
set ylabel 'loss (nats / token)'
set grid
set key top right
plot $plots
GP
echo "wrote $out"
