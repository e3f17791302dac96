#!/usr/bin/env bash
# Runs the whole test suite N times in a row (default 5) while two busy loops keep both
# cores loaded, to show the suite does not depend on an idle machine. The loops are
# started and stopped here, never by the suite.
#
#     bench/suite_under_load.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
python -c "while True: pass" & hog1=$!
python -c "while True: pass" & hog2=$!
trap 'kill "$hog1" "$hog2" 2>/dev/null || true' EXIT
for i in $(seq 1 "$rounds"); do
    start=$(date +%s)
    if python -m pytest -q -p no:cacheprovider > "/tmp/suite-under-load-$i.txt" 2>&1; then
        verdict=passed
    else
        verdict=FAILED
    fi
    echo "round $i: $verdict in $(( $(date +%s) - start )) s: $(tail -n 1 "/tmp/suite-under-load-$i.txt")"
    [ "$verdict" = passed ] || exit 1
done
