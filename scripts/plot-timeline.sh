#!/usr/bin/env bash
# Draws the timeline that `dispatch_by_type --timeline FILE.csv` records: queue depth on top,
# workers and requests in flight below, on one time axis, with the load's phases marked.
# Needs gnuplot (Debian/Ubuntu: apt-get install gnuplot-nox); nothing else in the project does.
# Usage: scripts/plot-timeline.sh FILE.csv OUT.png
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: scripts/plot-timeline.sh FILE.csv OUT.png   (FILE.csv from dispatch_by_type --timeline)" >&2
    exit 2
fi
csv=$1
out=$2
if ! command -v gnuplot >/dev/null; then
    echo "plot-timeline: gnuplot is not installed; on Debian or Ubuntu: sudo apt-get install gnuplot-nox" >&2
    exit 1
fi
if [[ ! -r "$csv" ]]; then
    echo "plot-timeline: cannot read $csv" >&2
    exit 1
fi
expected="elapsed_ms,queue_depth,workers,in_flight,completed,failed,retries,timed_out,phase"
if [[ $(head -n 1 "$csv") != "$expected" ]]; then
    echo "plot-timeline: $csv does not start with the header $expected" >&2
    exit 1
fi

# pngcairo draws smoother lines; the libgd png terminal is the fallback some builds only have.
if gnuplot -e 'set terminal pngcairo' 2>/dev/null; then
    terminal="pngcairo size 1000,620 font 'sans,10'"
else
    terminal="png size 1000,620"
fi

# A dashed line and a label where each phase begins (column 9 changes), on the top panel. The
# labels alternate between two heights so that a short phase's name does not hide the next one,
# and one near the right edge is written leftwards so that it stays inside the frame.
phase_marks=$(awk -F, '
    NR > 1 && $9 != prev && $9 != "stopped" { x[++n] = $1 / 1000; name[n] = $9 }
    NR > 1 { prev = $9; last = $1 / 1000 }
    END {
        for (i = 1; i <= n; i++) {
            printf "set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb \"#999999\"\n", x[i], x[i]
            printf "set label \"%s\" at %.3f, graph %.2f %s tc rgb \"#555555\"\n", name[i], x[i],
                (i % 2 ? 0.93 : 0.84), (x[i] > 0.9 * last ? "right offset -0.4, 0" : "offset 0.4, 0")
        }
    }' "$csv")

gnuplot <<EOF
set terminal $terminal
set output '$out'
set datafile separator ','
set multiplot layout 2, 1 title 'dispatch\\_by\\_type: the pool follows the load'
set lmargin 9
set rmargin 3
set grid ytics lc rgb '#dddddd'
set key top right opaque box lc rgb '#cccccc'
set xrange [0:*]
set yrange [0:*]
set offsets 0, 0, graph 0.25, 0  # headroom for the phase names and the key

set ylabel 'queue depth'
set format x ''
unset key
$phase_marks
plot '$csv' every ::1 using (\$1 / 1000):2 with filledcurves x1 fs solid 0.3 noborder lc rgb '#4c72b0' notitle, \
     '' every ::1 using (\$1 / 1000):2 with lines lw 1.5 lc rgb '#4c72b0' notitle

unset arrow
unset label
set key
set ylabel 'threads'
set xlabel 'seconds'
set format x '%g'
plot '$csv' every ::1 using (\$1 / 1000):3 with steps lw 2 lc rgb '#dd8452' title 'workers', \
     '' every ::1 using (\$1 / 1000):4 with lines lw 1 lc rgb '#55a868' title 'in flight'
unset multiplot
EOF
echo "plot-timeline: wrote $out"
