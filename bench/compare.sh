#!/usr/bin/env bash
# bench/compare.sh — snapdump against gcore on the same live target, in one run.
#
# For each scenario one snapdump-test-target is started with --heartbeat (a thread ticking every
# 1 ms and recording the longest gap between ticks), and every dumper variant dumps that same
# process in turn. Per variant:
#   pause     the longest heartbeat gap the target itself saw while the dumper ran (`maxgap`);
#             an idle target shows about 1.1 ms, so this is the stop plus ~1 ms
#   wall      the dumper's wall time, from /usr/bin/time (%e)
#   on disk   allocated bytes of the dump (du -B1); apparent = its size (stat -c %s)
#   peak RSS  the dumper's peak resident memory, from /usr/bin/time (%M; for gcore: gdb's)
#   flush     time of a `sync FILE` right after the dumper exits: snapdump fsyncs before it
#             returns, gcore does not, so "wall + flush" is the like-for-like time to durable data
#   disk      (once per target, before the dumps and after) `dd` of the target's VmRSS in zeros
#             with O_DIRECT and fsync: what the disk allows for a durable write of a full dump's
#             size just then; each snapdump wall is also given as a ratio to the faster of the two
#   PTE Δ     growth of the target's VmPTE across the dump: reading never-touched memory maps
#             the zero page into the target and grows its page tables
# gcore runs LAST on each target because of that: after it every reserved page of the sparse
# target is mapped (to the zero page) and a later dumper would see a different process.
# Every snapdump dump is opened with `gdb -batch -ex 'info threads'` (outside the timings) and
# must show all of the target's threads. Timing never fails the script; a failing dumper, a
# missing dump or a dump gdb cannot read does.
#
# Usage: bench/compare.sh [--smoke] [--big] [--dir DIR]
#   (default)  sparse: 4 GiB reserved, 10% touched; dense: 1 GiB touched
#   --big      also dense 4 GiB and 8 GiB (needs ~2x that in free RAM + disk)
#   --smoke    quick CI run (< 60 s once built): sparse 512 MiB/10%, dense 128 MiB; on a slow or
#              busy disk (deleting scattered sparse dumps costs seconds each) add --dir /dev/shm
#   --dir DIR  where dumps go (a fresh folder is made inside DIR and removed at the end);
#              default: a mktemp -d under /var/tmp, removed at the end
set -euo pipefail
trap '' PIPE # a dead target makes writes to its fifo fail with EPIPE instead of killing us

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOKE=0
BIG=0
DIR_ARG=""

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "compare.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --big) BIG=1 ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR_ARG="$2"; shift ;;
    --dir=*) DIR_ARG="${1#--dir=}" ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

T_START=$SECONDS
log() { printf '[%4ds] %s\n' $((SECONDS - T_START)) "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
if ! /usr/bin/time -f '%e %M' true >/dev/null 2>&1; then
  log "GNU time is missing: installing the 'time' package"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
  fi
  /usr/bin/time -f '%e %M' true >/dev/null 2>&1 || die "need GNU time at /usr/bin/time (apt-get install time)"
fi
for t in gdb gcore du stat awk timeout; do
  command -v "$t" >/dev/null || die "need $t on PATH (gcore and gdb: apt-get install gdb)"
done

log "== cargo build --release -p snapdump-cli -p snapdump-test-target"
(cd "$ROOT" && cargo build --release -p snapdump-cli -p snapdump-test-target) >&2
SNAPDUMP="$ROOT/target/release/snapdump"
TARGET="$ROOT/target/release/snapdump-test-target"
[ -x "$SNAPDUMP" ] && [ -x "$TARGET" ] || die "release binaries missing after the build"

VARIANTS=("snapdump --heap" "snapdump --full")
if "$SNAPDUMP" dump --help 2>/dev/null | grep -q -- '--no-snapshot'; then
  VARIANTS+=("snapdump --full --snapshot" "snapdump --full --no-snapshot")
  HAVE_SNAPSHOT=1
else
  HAVE_SNAPSHOT=0
fi
VARIANTS+=("gcore") # last: see the header

# --- work folder and cleanup -------------------------------------------------------------------
MADE_DIR=""
if [ -n "$DIR_ARG" ]; then
  if [ ! -d "$DIR_ARG" ]; then mkdir -p "$DIR_ARG"; MADE_DIR="$DIR_ARG"; fi
  WORK="$(mktemp -d "$DIR_ARG/snapdump-bench.XXXXXX")"
else
  WORK="$(mktemp -d /var/tmp/snapdump-bench.XXXXXX)"
fi
# Everything but the dumps (fifo, target output, timings, report) lives elsewhere, so that a
# dump filling its filesystem cannot break the measuring itself.
META="$(mktemp -d "${TMPDIR:-/tmp}/snapdump-bench-meta.XXXXXX")"

T_PID=""
T_FD=""
cleanup() {
  local rc=$?
  # (no redirection on these `exec`s: `exec 2>/dev/null` would silence the script for good)
  if [ -n "$T_FD" ]; then exec {T_FD}>&-; T_FD=""; fi
  if [ -n "$T_PID" ]; then
    kill -KILL "$T_PID" 2>/dev/null || true
    wait "$T_PID" 2>/dev/null || true
    T_PID=""
  fi
  rm -rf -- "$WORK" "$META"
  if [ -n "$MADE_DIR" ]; then rmdir -- "$MADE_DIR" 2>/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FAILED=0
fail() { log "FAIL: $*"; FAILED=1; }
OBS=() # observations for the end of the report

# --- the target --------------------------------------------------------------------------------
T_OUT=""
status_kib() { awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

start_target() { # args for the target
  local fifo="$META/target.in"
  T_OUT="$META/target.out"
  rm -f "$fifo" "$T_OUT"
  mkfifo "$fifo"
  "$TARGET" --heartbeat "$@" <"$fifo" >"$T_OUT" 2>"$META/target.err" &
  T_PID=$!
  exec {T_FD}>"$fifo" # keeps the target's stdin open until we close it
  local i
  for ((i = 0; i < 6000; i++)); do # 10 ms steps: up to 60 s for big fills
    grep -q '^READY ' "$T_OUT" 2>/dev/null && return 0
    kill -0 "$T_PID" 2>/dev/null || break
    sleep 0.01
  done
  log "target $* did not become READY; stderr: $(cat "$META/target.err" 2>/dev/null)"
  return 1
}

stop_target() {
  [ -n "$T_PID" ] || return 0
  echo exit >&"$T_FD" 2>/dev/null || true
  exec {T_FD}>&-
  T_FD=""
  local i
  for ((i = 0; i < 500; i++)); do kill -0 "$T_PID" 2>/dev/null || break; sleep 0.01; done
  kill -KILL "$T_PID" 2>/dev/null || true
  wait "$T_PID" 2>/dev/null || true
  T_PID=""
}

# Sends `maxgap`, prints the answer in microseconds (and so resets the maximum).
maxgap() {
  local n0 n i
  n0=$(grep -c '^maxgap ' "$T_OUT" || true)
  echo maxgap >&"$T_FD" || return 1
  for ((i = 0; i < 1000; i++)); do
    n=$(grep -c '^maxgap ' "$T_OUT" || true)
    if [ "$n" -gt "$n0" ]; then
      grep '^maxgap ' "$T_OUT" | tail -n 1 | awk '{ print $2 }'
      return 0
    fi
    sleep 0.01
  done
  return 1
}

# --- one dumper on the current target ----------------------------------------------------------
# Results per "scenario|variant" key.
declare -A R_PAUSE R_WALL R_DISK R_APP R_RSS R_FLUSH R_PTE R_OK R_SUMMARY
declare -A R_FLOOR # per scenario: "before after" seconds of disk_floor for the target's VmRSS

run_variant() { # scenario variant
  local sc="$1" v="$2" key="$1|$2"
  local tf="$META/time" so="$META/dumper.out" se="$META/dumper.err" file rc
  local slug="${v// /_}"
  slug="${slug//-/}"
  R_OK[$key]=0
  rm -f "$tf" "$so" "$se"

  # Start each dumper on a quiet disk: no dirty pages or pending discards left by the
  # previous dump, its deletion or the target's start.
  sync
  local pte0 pte1
  pte0=$(status_kib "$T_PID" VmPTE)
  maxgap >/dev/null || { fail "$sc/$v: the target does not answer maxgap"; return; }
  rc=0
  if [ "$v" = gcore ]; then
    file="$WORK/gcore.$T_PID"
    /usr/bin/time -o "$tf" -f '%e %M' timeout -k 10 900 \
      gcore -o "$WORK/gcore" "$T_PID" >"$so" 2>"$se" || rc=$?
  else
    local flags="${v#snapdump }"
    # shellcheck disable=SC2086 # flags are words on purpose
    /usr/bin/time -o "$tf" -f '%e %M' timeout -k 10 900 \
      "$SNAPDUMP" dump --pid "$T_PID" $flags -o "$WORK/$slug.core" >"$so" 2>"$se" || rc=$?
    file="$(tail -n 1 "$so" 2>/dev/null || true)"
    R_SUMMARY[$key]="$(grep -v '^[[:space:]]*$' "$se" | tail -n 1 || true)"
  fi
  # gcore exits 0 whenever a file exists, even a truncated one: on a full disk gdb warns
  # "Failed to write corefile contents (No space left on device)", still prints "Saved
  # corefile" and leaves a cut-off core.
  if [ "$v" = gcore ] && [ "$rc" -eq 0 ]; then
    if grep -q 'Failed to write corefile' "$so" "$se" || ! grep -q '^Saved corefile' "$so" "$se"; then
      rc=1
      { echo "(gcore exited 0, but:)"; grep -h 'Failed to write corefile' "$so" "$se" | sort -u; } >>"$se"
    fi
  fi
  sleep 0.05 # the heartbeat's first tick after the resume closes the gap
  local gap
  gap=$(maxgap) || { fail "$sc/$v: the target does not answer maxgap after the dump"; gap=""; }
  pte1=$(status_kib "$T_PID" VmPTE)
  kill -0 "$T_PID" 2>/dev/null || fail "$sc/$v: the target died"

  if [ "$rc" -ne 0 ]; then
    fail "$sc/$v: exit status $rc; stderr: $(tail -n 5 "$se")"
    rm -f -- "$file" "$WORK/$slug.core" "$WORK/gcore.$T_PID"
    return
  fi
  if [ -z "$file" ] || [ ! -f "$file" ]; then
    fail "$sc/$v: no dump file (stdout: $(tail -n 2 "$so"))"
    return
  fi
  local wall rss_kib
  read -r wall rss_kib _ <"$tf" || true
  R_WALL[$key]="$wall"
  R_RSS[$key]="$rss_kib"
  R_PAUSE[$key]="$gap"
  R_PTE[$key]=$((pte1 - pte0))
  R_APP[$key]=$(stat -c %s -- "$file")
  R_DISK[$key]=$(du -B1 -- "$file" | awk '{ print $1 }')
  local t0 t1
  t0=$(date +%s.%N)
  sync -- "$file" 2>/dev/null || sync
  t1=$(date +%s.%N)
  R_FLUSH[$key]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')

  if [ "$v" != gcore ]; then
    local want got out
    want=$(status_kib "$T_PID" Threads)
    out="$(timeout 300 gdb -nx -batch -ex 'info threads' "$TARGET" "$file" 2>&1 || true)"
    got=$(grep -cE '^[* ] +[0-9]+ +(Thread 0x[0-9a-f]+ )?\(?LWP [0-9]+' <<<"$out" || true)
    if [ "$got" -lt "$want" ]; then
      fail "$sc/$v: gdb shows $got of $want threads in the dump:"$'\n'"$(tail -n 15 <<<"$out")"
    else
      log "   gdb reads the $v dump: $got threads"
    fi
    local warn
    # gdb's complaints about the core itself, e.g. "Section `.reg-xstate/123' in core file too small."
    warn="$(grep -oiE "warning: [^:]*core file[^.]*\." <<<"$out" | sed -E 's#/[0-9]+#/TID#g' |
      sort | uniq -c | awk '{ n = $1; $1 = ""; printf "%s (x%d); ", substr($0, 2), n }' || true)"
    [ -z "$warn" ] || OBS+=("$sc/$v: gdb warns: ${warn%; }")
  fi
  # Deleting is timed too: a sparse dump of scattered pages has one extent per run, and on a
  # filesystem mounted with -o discard each freed extent is a discard request.
  t0=$(date +%s.%N)
  rm -f -- "$file"
  t1=$(date +%s.%N)
  local rm_s
  rm_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  gt "$rm_s" 2 && OBS+=("$sc/$v: deleting the dump took $rm_s s ($(mib "${R_DISK[$key]}") MiB on disk, $(mib "${R_APP[$key]}") MiB apparent; $WORK_MOUNT)")
  R_OK[$key]=1
}

# Seconds `dd` takes to write `bytes` zeros with O_DIRECT and fsync into the dumps' folder: what
# this disk allows for a durable write of that size right now (its speed varies from run to
# run). Buffered where O_DIRECT is refused (tmpfs). Empty when dd fails.
disk_floor() { # bytes
  local count=$((($1 + 4194303) / 4194304)) t0 t1 f="$WORK/disk-floor"
  sync
  t0=$(date +%s.%N)
  if ! dd if=/dev/zero of="$f" bs=4M count="$count" oflag=direct conv=fsync status=none 2>/dev/null &&
    ! dd if=/dev/zero of="$f" bs=4M count="$count" conv=fsync status=none 2>/dev/null; then
    rm -f -- "$f"
    return 0
  fi
  t1=$(date +%s.%N)
  rm -f -- "$f"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# --- formatting --------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else if (a / b < 0.01) printf "%.3fx", a / b; else printf "%.2fx", a / b }'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }

print_scenario() { # scenario description rss_kib idle_us
  local sc="$1" desc="$2" rss_kib="$3" idle="$4" v key="" g="$1|gcore"
  echo
  echo "### $sc: $desc"
  echo
  echo "target VmRSS $(mib $((rss_kib * 1024))) MiB; idle heartbeat max gap $(ms "$idle") ms (1 ms tick); dumps in $WORK_FS"
  echo
  local floor_before floor_after floor_min=""
  read -r floor_before floor_after <<<"${R_FLOOR[$sc]:-}"
  if [ -n "$floor_before" ] && [ -n "$floor_after" ]; then
    floor_min=$(awk -v a="$floor_before" -v b="$floor_after" 'BEGIN { print (a < b ? a : b) }')
    echo "disk: dd of the target's VmRSS in bytes, O_DIRECT and fsync, took $floor_before s before the dumps and $floor_after s after them"
    echo
  fi
  echo "| tool | pause (ms) | wall (s) | on disk (MiB) | apparent (MiB) | dumper peak RSS (MiB) | flush after (s) | target VmPTE Δ (KiB) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for v in "gcore" "${VARIANTS[@]}"; do
    [ "$v" = gcore ] && [ "$key" != "" ] && continue # gcore first, not twice
    key="$sc|$v"
    if [ "${R_OK[$key]:-0}" = 1 ]; then
      echo "| $v | $(ms "${R_PAUSE[$key]:-0}") | ${R_WALL[$key]} | $(mib "${R_DISK[$key]}") | $(mib "${R_APP[$key]}") | $(mib $((R_RSS[$key] * 1024))) | ${R_FLUSH[$key]} | ${R_PTE[$key]} |"
    else
      echo "| $v | FAILED | | | | | | |"
    fi
  done
  echo
  for v in "${VARIANTS[@]}"; do
    [ "$v" = gcore ] && continue
    key="$sc|$v"
    [ "${R_OK[$key]:-0}" = 1 ] && [ "${R_OK[$g]:-0}" = 1 ] || continue
    local wf gwf
    wf=$(awk -v a="${R_WALL[$key]}" -v b="${R_FLUSH[$key]}" 'BEGIN { print a + b }')
    gwf=$(awk -v a="${R_WALL[$g]}" -v b="${R_FLUSH[$g]}" 'BEGIN { print a + b }')
    local vs_disk=""
    [ -n "$floor_min" ] && vs_disk="; wall $(ratio "${R_WALL[$key]}" "$floor_min") the faster dd"
    echo "- $v: pause $(ratio "${R_PAUSE[$key]}" "${R_PAUSE[$g]}") gcore, wall $(ratio "${R_WALL[$key]}" "${R_WALL[$g]}") (incl. flush $(ratio "$wf" "$gwf")), disk $(ratio "${R_DISK[$key]}" "${R_DISK[$g]}"), RSS $(ratio "${R_RSS[$key]}" "${R_RSS[$g]}")$vs_disk"
  done
  local any=0
  for v in "${VARIANTS[@]}"; do
    key="$sc|$v"
    [ -n "${R_SUMMARY[$key]:-}" ] || continue
    [ $any = 1 ] || { echo; echo "snapdump's own summaries:"; echo; any=1; }
    echo "- \`$v\`: ${R_SUMMARY[$key]}"
  done
}

# Expectations from issues 4 and 5 and design.md: reported, never fatal.
check_expectations() { # scenario kind rss_kib
  local sc="$1" kind="$2" rss_kib="$3" v key g="$1|gcore"
  for v in "${VARIANTS[@]}"; do
    [ "$v" = gcore ] && continue
    key="$sc|$v"
    [ "${R_OK[$key]:-0}" = 1 ] || continue
    gt "${R_RSS[$key]}" 65536 &&
      OBS+=("$sc/$v: dumper peak RSS $(mib $((R_RSS[$key] * 1024))) MiB > 64 MiB (issue 5)")
    [ "${R_PTE[$key]}" -gt 0 ] &&
      OBS+=("$sc/$v: the target's VmPTE grew by ${R_PTE[$key]} KiB during the dump (untouched memory read?)")
    if [ "$v" = "snapdump --heap" ] && gt "${R_DISK[$key]}" "$(awk -v r="$rss_kib" 'BEGIN { print r * 1024 * 1.1 }')"; then
      OBS+=("$sc/$v: $(mib "${R_DISK[$key]}") MiB on disk > 1.1x the target's VmRSS $(mib $((rss_kib * 1024))) MiB (issue 5)")
    fi
    [ "${R_OK[$g]:-0}" = 1 ] || continue
    if [ "$kind" = sparse ] && gt "${R_WALL[$key]}" "$(awk -v w="${R_WALL[$g]}" 'BEGIN { print w / 10 }')"; then
      OBS+=("$sc/$v: wall ${R_WALL[$key]} s > 1/10 of gcore's ${R_WALL[$g]} s on a sparse target (issue 5 expects <= 1/10)")
    fi
    if [ "$kind" = dense ] && gt "${R_WALL[$key]}" "${R_WALL[$g]}"; then
      OBS+=("$sc/$v: wall ${R_WALL[$key]} s > gcore's ${R_WALL[$g]} s on a dense target (issue 5 expects no slower; gcore does not fsync, its flush took ${R_FLUSH[$g]} s more)")
    fi
  done
  if [ "$HAVE_SNAPSHOT" = 1 ]; then
    local s="$sc|snapdump --full --snapshot" n="$sc|snapdump --full --no-snapshot"
    if [ "${R_OK[$s]:-0}" = 1 ] && [ "${R_OK[$n]:-0}" = 1 ] && gt "${R_PAUSE[$s]}" "$(awk -v p="${R_PAUSE[$n]}" 'BEGIN { print p * 1.1 }')"; then
      OBS+=("$sc: snapshot pause $(ms "${R_PAUSE[$s]}") ms is not below the stop-the-world pause $(ms "${R_PAUSE[$n]}") ms")
    fi
  fi
}

# --- scenarios ---------------------------------------------------------------------------------
SCENARIOS=() # "name|kind|description|target args"
if [ "$SMOKE" = 1 ]; then
  SCENARIOS+=("sparse-512M|sparse|512 MiB reserved, 10% touched|--sparse-reserve-mb 512 --sparse-touch-pct 10")
  SCENARIOS+=("dense-128M|dense|128 MiB touched|--touch-mb 128")
else
  SCENARIOS+=("sparse-4G|sparse|4 GiB reserved, 10% touched|--sparse-reserve-mb 4096 --sparse-touch-pct 10")
  SCENARIOS+=("dense-1G|dense|1 GiB touched|--touch-mb 1024")
fi
if [ "$BIG" = 1 ]; then
  SCENARIOS+=("dense-4G|dense|4 GiB touched|--touch-mb 4096")
  SCENARIOS+=("dense-8G|dense|8 GiB touched|--touch-mb 8192")
fi

WORK_FS="$(df -PT "$WORK" | awk 'NR == 2 { printf "%s (%s, %.1f GiB free)", $7, $2, $5 / 1048576 }')"
WORK_MOUNT="$(findmnt -n -o FSTYPE,OPTIONS -T "$WORK" 2>/dev/null | awk '{ print $1 " " $2 }' || true)"
REPORT="$META/report.md"
{
  echo "## snapdump vs gcore — $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
  echo
  read -r l1 l5 _ </proc/loadavg
  echo "load average at start: $l1 (1 min), $l5 (5 min)$(awk -v l="$l1" -v n="$(nproc)" 'BEGIN { if (l + 0 > n / 2) printf " — other work is running on this machine: timings are noisy" }')"
  echo
  echo "snapdump $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- crates 2>/dev/null || echo ' + uncommitted changes'); $(gdb --version | head -n 1); run order on each target: $(printf '%s, ' "${VARIANTS[@]}" | sed 's/, $//')"
} >"$REPORT"

for s in "${SCENARIOS[@]}"; do
  IFS='|' read -r sc kind desc targs <<<"$s"
  log "== $sc: $desc"
  # shellcheck disable=SC2086
  if ! start_target $targs; then
    fail "$sc: the target did not start"
    stop_target
    continue
  fi
  rss_kib=$(status_kib "$T_PID" VmRSS)
  maxgap >/dev/null || true
  sleep 1
  idle=$(maxgap || echo 0)
  floor_before=$(disk_floor $((rss_kib * 1024)))
  for v in "${VARIANTS[@]}"; do
    log "-- $sc: $v"
    run_variant "$sc" "$v"
  done
  R_FLOOR[$sc]="$floor_before $(disk_floor $((rss_kib * 1024)))"
  stop_target
  print_scenario "$sc" "$desc" "$rss_kib" "$idle" >>"$REPORT"
  check_expectations "$sc" "$kind" "$rss_kib"
done

{
  echo
  if [ ${#OBS[@]} -gt 0 ]; then
    echo "Observations (never fatal):"
    echo
    for o in "${OBS[@]}"; do echo "- $o"; done
  else
    echo "Observations: none."
  fi
} >>"$REPORT"

cat "$REPORT"
if [ "$FAILED" != 0 ]; then
  log "compare.sh: some dumps failed (see FAIL lines above)"
  exit 1
fi
