# Shared by the bench scripts (sourced, not run).

# A number to two decimals.
fig() { awk -v v="$1" 'BEGIN { printf "%.2f", v }'; }

# "median M (min A, max B, N rounds)" of the space-separated numbers in $1.
stats() {
    echo "$1" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "median %.2f (min %.2f, max %.2f, %d rounds)", m, v[1], v[NR], NR }'
}
