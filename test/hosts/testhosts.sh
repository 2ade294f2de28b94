#!/usr/bin/env bash
# testhosts.sh — throwaway Debian test hosts (11, 12 or 13) for metalship's
# real-host tests.
#
# Each host is a systemd-nspawn container booted from a cached Debian image
# through an overlayfs (the image stays clean), in its own network namespace
# reachable only from this machine over a veth pair (no forwarding, no NAT).
# See test/hosts/README.md. Run as root.
#
#   testhosts.sh image [full|bare]
#   testhosts.sh up NAME INDEX [full|bare] --pubkey FILE [--bind-ro SRC:DST]... [--lan TAG:ADDR]
#   testhosts.sh down NAME
#
# --lan TAG:ADDR also plugs the host into a private LAN shared by every host
# given the same TAG (a bridge with no address on this machine, so nothing on
# it is routed anywhere), as ADDR/24 on its interface `lan0`: how a load
# balancer reaches its app hosts.
#   testhosts.sh down-all
#   testhosts.sh ssh NAME [cmd...]
#
# METALSHIP_DEBIAN=bullseye|bookworm|trixie (default bookworm) picks the release
# of the image that `image` builds and `up` boots.
#
# Logs go to stderr; machine-readable results (image path, host JSON) to stdout.
set -euo pipefail

# callers (node, CI) may pass a PATH without the sbin directories
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Bump whenever the image recipe below changes: it is part of the cache key.
readonly RECIPE_VERSION=2
readonly SUITE=${METALSHIP_DEBIAN:-bookworm}
readonly SUITES=(bullseye bookworm trixie)
readonly CACHE_DIR=/var/cache/metalship/images
readonly STATE_ROOT=/var/lib/metalship/hosts
readonly NET_PREFIX=10.213
readonly BOOT_TIMEOUT=${METALSHIP_BOOT_TIMEOUT:-90}
readonly DOWN_TIMEOUT=20
SELF=$(realpath "${BASH_SOURCE[0]}")
readonly SELF

readonly BARE_INCLUDE=systemd,systemd-sysv,openssh-server,dbus,iproute2,python3,sudo
FULL_PACKAGES=(
  nginx postgresql redis-server ufw
  python3-venv python3-pip python3-uvicorn python3-fastapi python3-alembic
  python3-sqlalchemy python3-psycopg2 python3-redis python3-httpx
  logrotate curl cron unattended-upgrades procps less ca-certificates openssl certbot
  # the bench's Capistrano baseline clones from a bare repository on the host
  git
)
# Every name above exists in all three releases. What differs:
case $SUITE in
  # trixie's python3-pip no longer pulls python3-setuptools in, which building a
  # requirement from source (setup.py) needs where there is no PyPI to fetch it from
  trixie) FULL_PACKAGES+=(python3-setuptools) ;;
esac
readonly FULL_PACKAGES
# Units that cannot work inside an nspawn container and would only leave the
# host "degraded". Masked in the image.
readonly MASKED_UNITS=()

# The image's apt runs against the machine's mirror, which may be a dated
# snapshot whose Release files have expired: do not let that fail the build.
readonly APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o Dpkg::Use-Pty=0)

log() { printf '[testhosts] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: testhosts.sh image [full|bare]
       testhosts.sh up NAME INDEX [full|bare] --pubkey FILE [--bind-ro SRC:DST]... [--lan TAG:ADDR]
       testhosts.sh down NAME
       testhosts.sh down-all
       testhosts.sh ssh NAME [cmd...]
EOF
  exit 2
}

# ---------------------------------------------------------------------------
# exit handling: an interrupted build or boot leaves nothing half-made behind

BUILD_TMP=""      # image build directory to discard on failure
UP_FAIL_NAME=""   # host to tear down if `up` fails

on_exit() {
  local rc=$?
  trap - EXIT
  if [[ -n $BUILD_TMP && -d $BUILD_TMP ]]; then
    log "discarding unfinished image build $BUILD_TMP"
    discard_dir "$BUILD_TMP" || true
  fi
  if [[ -n $UP_FAIL_NAME ]]; then
    local log_file="$STATE_ROOT/$UP_FAIL_NAME/nspawn.log"
    if [[ -s $log_file ]]; then
      log "last lines of $UP_FAIL_NAME's console:"
      tail -n 30 "$log_file" | sed 's/^/  | /' >&2 || true
    fi
    log "tearing down $UP_FAIL_NAME after failed start"
    host_down "$UP_FAIL_NAME" || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root"
}

# ---------------------------------------------------------------------------
# tools

ensure_tools() {
  local -A pkg_for=(
    [debootstrap]=debootstrap [systemd-nspawn]=systemd-container
    [dpkg-scanpackages]=dpkg-dev [ssh]=openssh-client [ssh-keygen]=openssh-client
    [ip]=iproute2 [ps]=procps [flock]=util-linux [findmnt]=util-linux
    [setsid]=util-linux [timeout]=coreutils
  )
  local cmd missing=()
  for cmd in "${!pkg_for[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
  done
  ((${#missing[@]} == 0)) && return 0
  mkdir -p /var/lib/metalship
  local fd
  exec {fd}>/var/lib/metalship/.tools.lock
  flock "$fd"
  missing=()
  for cmd in "${!pkg_for[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
  done
  if ((${#missing[@]} > 0)); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  exec {fd}>&-
}

# ---------------------------------------------------------------------------
# mirror: read from the machine's own apt sources, never hard-coded

# Print the first URI of a "deb" source whose suites include $1 exactly.
apt_source_uri() {
  local suite=$1 f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk -v want="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          key = tolower(line); sub(/:.*/, "", key)
          val = line; sub(/^[^:]*:[ \t]*/, "", val)
          if (key == "types") types = val
          else if (key == "uris") uris = val
          else if (key == "suites") suites = val
          else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled == "no") next
        if ((" " types " ") !~ / deb /) next
        if ((" " suites " ") !~ (" " want " ")) next
        split(uris, u, /[ \t]+/)
        if (u[1] != "") { print u[1]; exit }
      }' "$f")
    if [[ -n $uri ]]; then
      printf '%s\n' "$uri"
      return 0
    fi
  done
  local -a files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]} > 0)) || return 1
  uri=$(awk -v want="$suite" '
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == want) { print $i; exit }
    }' "${files[@]}")
  [[ -n $uri ]] || return 1
  printf '%s\n' "$uri"
}

# URI of suite $SUITE$1 ("", -updates, -security): the machine's own source for
# it, or else, on a Debian machine of another release, the source of the
# machine's release with the suite name swapped (Debian's mirrors serve every
# release side by side).
suite_uri() {
  local suffix=$1 own
  apt_source_uri "$SUITE$suffix" && return 0
  # shellcheck disable=SC1091 # the machine's own release file, read at run time
  own=$(. /etc/os-release 2>/dev/null && [[ ${ID:-} == debian ]] && printf '%s' "${VERSION_CODENAME:-}") || return 1
  [[ -n $own && $own != "$SUITE" ]] || return 1
  apt_source_uri "$own$suffix"
}

# ---------------------------------------------------------------------------
# mounts and directories

# Unmount everything mounted at or below $1, deepest first.
unmount_under() {
  local dir=$1 target
  dir=$(realpath -m "$dir")
  findmnt -rn -o TARGET 2>/dev/null | awk -v d="$dir" '$0 == d || index($0, d "/") == 1' |
    sort -r | while IFS= read -r target; do
      umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "could not unmount $target"
    done
}

# Remove a directory that may still have mounts inside (never crosses into them).
discard_dir() {
  local dir=$1
  [[ -e $dir ]] || return 0
  unmount_under "$dir"
  rm -rf --one-file-system "$dir"
}

# ---------------------------------------------------------------------------
# images

image_hash() {
  local variant=$1
  {
    printf 'recipe=%s\nsuite=%s\ninclude=%s\nmasked=%s\n' \
      "$RECIPE_VERSION" "$SUITE" "$BARE_INCLUDE" "${MASKED_UNITS[*]}"
    if [[ $variant == full ]]; then
      printf 'packages=%s\n' "${FULL_PACKAGES[*]}"
    fi
  } | sha256sum | cut -c1-16
}

image_dir() {
  printf '%s/%s-%s\n' "$CACHE_DIR" "$1" "$(image_hash "$1")"
}

# Ensure the image exists (building it under a lock if needed) and set
# IMAGE_ROOTFS to its rootfs. Runs in the current shell (never in $(...)) so
# that an interrupted build is cleaned up by the exit trap.
IMAGE_ROOTFS=""
ensure_image() {
  local variant=$1 dir fd
  dir=$(image_dir "$variant")
  if [[ ! -f $dir/complete ]]; then
    # full is made from a copy of bare
    [[ $variant == full ]] && ensure_image bare
    mkdir -p "$CACHE_DIR"
    exec {fd}>"$CACHE_DIR/.$SUITE-$variant.lock"
    if ! flock -n "$fd"; then
      log "waiting for another build of the $SUITE $variant image"
      flock "$fd"
    fi
    if [[ ! -f $dir/complete ]]; then
      build_image "$variant" "$dir"
    fi
    exec {fd}>&-
  fi
  IMAGE_ROOTFS=$dir/rootfs
}

chroot_run() {
  local rootfs=$1
  shift
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    chroot "$rootfs" "$@"
}

# Every supported release names these suites <release>-updates and
# <release>-security (buster's <release>/updates is not supported).
write_image_sources() {
  local rootfs=$1 mirror=$2 suffix uri
  {
    printf 'deb %s %s main\n' "$mirror" "$SUITE"
    for suffix in -updates -security; do
      if uri=$(suite_uri "$suffix"); then
        printf 'deb %s %s%s main\n' "$uri" "$SUITE" "$suffix"
      fi
    done
  } >"$rootfs/etc/apt/sources.list"
}

# Steps shared by both variants once their packages are in.
finalize_image() {
  local rootfs=$1 unit
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  : >"$rootfs/etc/machine-id"
  if [[ -f $rootfs/var/lib/dbus/machine-id && ! -L $rootfs/var/lib/dbus/machine-id ]]; then
    rm -f "$rootfs/var/lib/dbus/machine-id"
  fi
  rm -rf "$rootfs/root/.ssh"
  install -d -m 700 "$rootfs/root/.ssh"
  # Each host gets its own name, hosts and resolver file at boot; the image's
  # copy is a placeholder that resolves nothing.
  printf 'localhost\n' >"$rootfs/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
  rm -f "$rootfs/etc/resolv.conf"
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$rootfs/etc/resolv.conf"
  for unit in "${MASKED_UNITS[@]}"; do
    ln -sfn /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  # The chroot shares the machine's network: when the machine runs a PostgreSQL
  # of its own on 5432, pg_createcluster picks the next free port. A server's
  # cluster listens on the standard port.
  local conf
  for conf in "$rootfs"/etc/postgresql/*/main/postgresql.conf; do
    [[ -f $conf ]] && sed -i 's/^port = .*/port = 5432\t\t\t\t# (standard port)/' "$conf"
  done
  rm -f "$rootfs/usr/sbin/policy-rc.d"
  chroot_run "$rootfs" apt-get clean
  rm -f "$rootfs"/var/cache/apt/*.bin
  rm -rf "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  find "$rootfs/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete 2>/dev/null || true
}

build_image() {
  local variant=$1 final=$2 stale mirror rootfs buildlog started
  started=$SECONDS
  # Anything left by a build that was killed is stale: we hold the lock.
  for stale in "$CACHE_DIR/.build-$SUITE-$variant"-*; do
    [[ -e $stale ]] || continue
    log "removing stale build $stale"
    discard_dir "$stale"
  done
  if [[ -e $final ]]; then
    log "removing incomplete image $final"
    discard_dir "$final"
  fi
  mirror=$(suite_uri "") ||
    die "no apt source for suite $SUITE (nor for this Debian machine's own release) in /etc/apt/sources.list{,.d/} — cannot find a Debian mirror"
  BUILD_TMP=$(mktemp -d "$CACHE_DIR/.build-$SUITE-$variant-XXXXXX")
  rootfs=$BUILD_TMP/rootfs
  buildlog=$BUILD_TMP/build.log
  log "building $SUITE $variant image $(basename "$final") from $mirror (log: $buildlog)"

  if [[ $variant == bare ]]; then
    log "debootstrap $SUITE (minbase + $BARE_INCLUDE)"
    if ! debootstrap --variant=minbase --include="$BARE_INCLUDE" "$SUITE" "$rootfs" "$mirror" >>"$buildlog" 2>&1; then
      tail -n 40 "$buildlog" >&2
      die "debootstrap failed"
    fi
    write_image_sources "$rootfs" "$mirror"
  else
    local base
    base=$(image_dir bare)/rootfs
    [[ -f $base/../complete ]] || die "bare image missing"
    log "copying bare image $base"
    cp -a --reflink=auto "$base" "$rootfs"
    write_image_sources "$rootfs" "$mirror"
    rm -f "$rootfs/etc/resolv.conf"
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
    printf '#!/bin/sh\n# no service starts while building the image\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    mount -t proc proc "$rootfs/proc"
    log "apt-get install ${FULL_PACKAGES[*]}"
    if ! { chroot_run "$rootfs" apt-get "${APT_OPTS[@]}" update &&
      chroot_run "$rootfs" apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${FULL_PACKAGES[@]}"; } >>"$buildlog" 2>&1; then
      umount "$rootfs/proc" || umount -l "$rootfs/proc"
      tail -n 40 "$buildlog" >&2
      die "package installation failed"
    fi
    umount "$rootfs/proc" || umount -l "$rootfs/proc"
  fi
  if [[ $variant == bare ]]; then
    # the bare image also gets fresh package lists so hosts and chroots made
    # from it know the candidates without reaching a mirror
    mount -t proc proc "$rootfs/proc"
    rm -f "$rootfs/etc/resolv.conf"
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
    if ! chroot_run "$rootfs" apt-get "${APT_OPTS[@]}" update >>"$buildlog" 2>&1; then
      umount "$rootfs/proc" || umount -l "$rootfs/proc"
      tail -n 40 "$buildlog" >&2
      die "apt-get update failed"
    fi
    umount "$rootfs/proc" || umount -l "$rootfs/proc"
  fi
  finalize_image "$rootfs"
  # nothing may stay mounted inside an image we are about to trust
  unmount_under "$BUILD_TMP"
  {
    printf 'variant=%s\nrecipe=%s\nsuite=%s\nmirror=%s\nbuilt=%s\n' \
      "$variant" "$RECIPE_VERSION" "$SUITE" "$mirror" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$BUILD_TMP/complete"
  sync -f "$rootfs" 2>/dev/null || sync
  mv -T "$BUILD_TMP" "$final"
  BUILD_TMP=""
  log "$SUITE $variant image ready in $((SECONDS - started)) s: $final ($(du -sh "$final/rootfs" 2>/dev/null | cut -f1))"
}

cmd_image() {
  local variant=${1:-full}
  [[ $# -le 1 ]] || usage
  check_variant "$variant"
  ensure_tools
  ensure_image "$variant"
  printf '%s\n' "$IMAGE_ROOTFS"
}

check_suite() {
  local known
  for known in "${SUITES[@]}"; do
    [[ $SUITE == "$known" ]] && return 0
  done
  die "METALSHIP_DEBIAN must be one of ${SUITES[*]}, not '$SUITE'"
}

check_variant() {
  [[ $1 == full || $1 == bare ]] || die "unknown image variant '$1' (full|bare)"
}

# ---------------------------------------------------------------------------
# hosts

check_name() {
  [[ $1 =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] || die "host name '$1' must be 1-12 chars of [a-z0-9-]"
}

# Start time (clock ticks since boot) of a PID, empty if gone.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # after "comm) ", field 3 of stat is the first; starttime is field 22
  awk '{ print $20 }' <<<"$stat"
}

# Is the PID recorded in state file "$state/$2.pid" (with start time in
# "$state/$2.start") still the same live process?  Prints the PID.
recorded_pid() {
  local state=$1 what=$2 pid start now
  pid=$(cat "$state/$what.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  now=$(proc_start "$pid") || return 1
  start=$(cat "$state/$what.start" 2>/dev/null) || start=""
  if [[ -n $start ]]; then
    [[ $start == "$now" ]] || return 1
  elif [[ $what == nspawn ]]; then
    # no start time recorded (killed mid-`up`): fall back to the command line
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "systemd-nspawn.*--machine=$(basename "$state") " || return 1
  else
    return 1
  fi
  printf '%s\n' "$pid"
}

# Alive = exists and is not a zombie (this machine's PID 1 may take a while to
# reap the orphans it inherits, such as a stopped nspawn).
pid_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# The container's PID 1 (as seen from here): a descendant of nspawn that is
# PID 1 in its own PID namespace.
find_leader() {
  local nspawn=$1 queue=("$1") pid child nspid
  while ((${#queue[@]} > 0)); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    if [[ $pid != "$nspawn" ]]; then
      nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$pid/status" 2>/dev/null || true)
      if [[ $nspid == 1 ]]; then
        printf '%s\n' "$pid"
        return 0
      fi
    fi
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
      queue+=("$child")
    done
  done
  return 1
}

# Fallback when no leader PID was recorded: a process in this host's network
# namespace (which we created) that is PID 1 of its own PID namespace.
find_leader_in_netns() {
  local name=$1 pid nspid
  [[ -e /run/netns/$name ]] || return 1
  for pid in $(ip netns pids "$name" 2>/dev/null); do
    nspid=$(awk '/^NSpid:/ { print (NF > 2 ? $NF : "") }' "/proc/$pid/status" 2>/dev/null) || continue
    if [[ $nspid == 1 ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  done
  return 1
}

host_address() { printf '%s.%s.2\n' "$NET_PREFIX" "$1"; }

ssh_opts_for() {
  local state=$1
  SSH_OPTS=(-F /dev/null -i "$(cat "$state/key")" -o BatchMode=yes -o IdentitiesOnly=yes
    -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$state/known_hosts"
    -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=2 -o LogLevel=ERROR
    -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
}

write_host_files() {
  local name=$1 merged=$2 pubkey=$3 type
  install -d -m 755 "$merged/etc/ssh"
  rm -f "$merged"/etc/ssh/ssh_host_*
  for type in ed25519 ecdsa rsa; do
    ssh-keygen -q -t "$type" -N '' -C "root@$name" -f "$merged/etc/ssh/ssh_host_${type}_key"
  done
  install -d -m 700 "$merged/root/.ssh"
  install -m 600 "$pubkey" "$merged/root/.ssh/authorized_keys"
  printf '%s\n' "$name" >"$merged/etc/hostname"
  cat >"$merged/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$name
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
  rm -f "$merged/etc/resolv.conf"
  # resolves nothing, answers at once: sudo and friends must not stall on DNS
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$merged/etc/resolv.conf"
  local id
  id=$(systemd-id128 new 2>/dev/null) || id=$(tr -d '-' </proc/sys/kernel/random/uuid)
  printf '%s\n' "$id" >"$merged/etc/machine-id"
}

cmd_up() {
  local name="" index="" variant=full pubkey="" positional=() binds=() lan=""
  while (($# > 0)); do
    case $1 in
      --lan) (($# >= 2)) || usage; lan=$2; shift 2 ;;
      --lan=*) lan=${1#*=}; shift ;;
      --pubkey) (($# >= 2)) || usage; pubkey=$2; shift 2 ;;
      --pubkey=*) pubkey=${1#*=}; shift ;;
      --bind-ro) (($# >= 2)) || usage; binds+=("--bind-ro=$2"); shift 2 ;;
      --bind-ro=*) binds+=("--bind-ro=${1#*=}"); shift ;;
      -*) die "unknown option $1" ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  ((${#positional[@]} >= 2 && ${#positional[@]} <= 3)) || usage
  name=${positional[0]}
  index=${positional[1]}
  variant=${positional[2]:-full}
  check_name "$name"
  [[ $index =~ ^[0-9]{1,3}$ ]] || die "INDEX must be 1..254"
  index=$((10#$index))
  ((index >= 1 && index <= 254)) || die "INDEX must be 1..254"
  check_variant "$variant"
  [[ -n $pubkey ]] || die "--pubkey FILE is required"
  [[ $pubkey == *.pub ]] || die "--pubkey must name a .pub file next to its private key"
  [[ -f $pubkey ]] || die "no such public key: $pubkey"
  pubkey=$(realpath "$pubkey")
  local privkey=${pubkey%.pub}
  [[ -f $privkey ]] || die "no private key next to $pubkey"
  local lan_tag="" lan_addr=""
  if [[ -n $lan ]]; then
    [[ $lan =~ ^([a-z0-9]{1,8}):(([0-9]{1,3}\.){3}[0-9]{1,3})$ ]] ||
      die "--lan must be TAG:ADDR (TAG 1-8 chars of [a-z0-9], ADDR an IPv4 address), not '$lan'"
    lan_tag=${BASH_REMATCH[1]}
    lan_addr=${BASH_REMATCH[2]}
  fi
  local bind src
  for bind in "${binds[@]}"; do
    src=${bind#--bind-ro=}
    src=${src%%:*}
    [[ -e $src ]] || die "bind source does not exist: $src"
  done

  ensure_tools
  ensure_image "$variant"
  local rootfs=$IMAGE_ROOTFS

  local state=$STATE_ROOT/$name address
  address=$(host_address "$index")
  mkdir -p "$STATE_ROOT"
  local fd
  exec {fd}>"$STATE_ROOT/.up.lock"
  flock "$fd"
  if [[ -d $state ]]; then
    if recorded_pid "$state" nspawn >/dev/null || recorded_pid "$state" supervisor >/dev/null; then
      die "host $name is already up (run: testhosts.sh down $name)"
    fi
    if recorded_pid "$state" up >/dev/null; then
      die "host $name is being started by another run"
    fi
    log "$name: cleaning up leftovers of an earlier run"
    host_down "$name"
  fi
  local other
  for other in "$STATE_ROOT"/*/index; do
    [[ -f $other ]] || continue
    [[ $(cat "$other") == "$index" ]] && die "index $index is used by host $(basename "$(dirname "$other")")"
  done
  [[ -e /run/netns/$name ]] && die "network namespace $name exists and is not ours"
  ip link show "$name-h" >/dev/null 2>&1 && die "interface $name-h exists and is not ours"
  ip -o -4 addr show | grep -q " $NET_PREFIX\.$index\.1/" && die "$NET_PREFIX.$index.1 is already in use on this machine"

  # From here on, the state dir marks everything below as ours.
  mkdir -p "$state/upper" "$state/work" "$state/merged"
  UP_FAIL_NAME=$name
  printf '%s\n' "$$" >"$state/up.pid"
  proc_start "$$" >"$state/up.start"
  printf '%s\n' "$index" >"$state/index"
  printf '%s\n' "$variant" >"$state/variant"
  printf '%s\n' "$SUITE" >"$state/suite"
  printf '%s\n' "$privkey" >"$state/key"
  exec {fd}>&-

  local started=$SECONDS
  mount -t overlay "metalship-$name" \
    -o "lowerdir=$rootfs,upperdir=$state/upper,workdir=$state/work" "$state/merged"
  write_host_files "$name" "$state/merged" "$pubkey"
  local pub
  : >"$state/known_hosts"
  for pub in "$state"/merged/etc/ssh/ssh_host_*_key.pub; do
    awk -v a="$address" '{ print a, $1, $2 }' "$pub" >>"$state/known_hosts"
  done

  ip netns add "$name"
  ip link add "$name-h" type veth peer name "$name-c"
  ip link set "$name-c" netns "$name"
  # no forwarding of anything the host sends: it reaches this machine only
  echo 0 >"/proc/sys/net/ipv4/conf/$name-h/forwarding" 2>/dev/null || true
  ip addr add "$NET_PREFIX.$index.1/24" dev "$name-h"
  ip link set "$name-h" up
  ip -n "$name" link set lo up
  ip -n "$name" addr add "$address/24" dev "$name-c"
  ip -n "$name" link set "$name-c" up
  if [[ -n $lan_tag ]]; then
    printf '%s\n' "$lan_tag" >"$state/lan"
    lan_up "$name" "$lan_tag" "$lan_addr"
  fi

  # nspawn runs under a supervisor that boots the host again when it reboots
  # (nspawn exits with 133 then); the supervisor records each nspawn's PID.
  local pid
  : >"$state/nspawn.log"
  setsid bash "$SELF" _supervise "$state" systemd-nspawn -q -b -D "$state/merged" --register=no --keep-unit \
    --capability=CAP_NET_ADMIN --network-namespace-path="/run/netns/$name" \
    --machine="$name" --resolv-conf=off --timezone=off --console=read-only \
    "${binds[@]}" </dev/null >/dev/null 2>>"$state/supervisor.log" &
  pid=$!
  printf '%s\n' "$pid" >"$state/supervisor.pid"
  proc_start "$pid" >"$state/supervisor.start" || die "systemd-nspawn exited at once: $(cat "$state/nspawn.log")"

  local ssh_out deadline remaining leader="" SSH_OPTS
  ssh_opts_for "$state"
  deadline=$((SECONDS + BOOT_TIMEOUT))
  while :; do
    pid_alive "$pid" || die "systemd-nspawn for $name exited during boot: $(tail -n 20 "$state/nspawn.log")"
    if [[ -z $leader ]] && leader=$(find_leader "$pid"); then
      printf '%s\n' "$leader" >"$state/leader.pid"
      proc_start "$leader" >"$state/leader.start" || true
    fi
    remaining=$((deadline - SECONDS))
    ((remaining > 0)) || die "$name did not come up within ${BOOT_TIMEOUT}s"
    ssh_out=$(timeout "$remaining" ssh "${SSH_OPTS[@]}" "root@$address" \
      'systemctl is-system-running --wait' 2>/dev/null) || true
    case $ssh_out in
      running) break ;;
      degraded)
        log "warning: $name is degraded; failed units:"
        ssh "${SSH_OPTS[@]}" "root@$address" 'systemctl --failed --no-legend --plain' 2>/dev/null |
          sed 's/^/  /' >&2 || true
        break
        ;;
    esac
    sleep 0.5
  done
  UP_FAIL_NAME=""
  rm -f "$state/up.pid" "$state/up.start"
  log "$name ($SUITE) up at $address in $((SECONDS - started)) s (state: $ssh_out)"

  local known
  known=$(awk '{ printf "%s%s", (NR > 1 ? "\\n" : ""), $0 }' "$state/known_hosts")
  printf '{"name":"%s","address":"%s","port":22,"knownHosts":"%s","lan":"%s"}\n' \
    "$name" "$address" "$known" "$lan_addr"
}

# The bridge of LAN $1: made by the first host that joins, removed with the last.
lan_bridge() { printf 'msl-%s\n' "$1"; }

lan_up() {
  local name=$1 tag=$2 addr=$3 bridge
  bridge=$(lan_bridge "$tag")
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge 2>/dev/null || ip link show "$bridge" >/dev/null 2>&1 ||
      die "cannot create bridge $bridge"
  fi
  # never through this machine's firewall (br_netfilter would send bridged
  # frames through its FORWARD chain), never an address here
  ip link set "$bridge" type bridge nf_call_iptables 0 nf_call_ip6tables 0 2>/dev/null || true
  ip link set "$bridge" up
  ip link add "$name-l" type veth peer name "$name-m"
  ip link set "$name-m" netns "$name"
  ip link set "$name-l" master "$bridge"
  ip link set "$name-l" up
  ip -n "$name" link set "$name-m" name lan0
  ip -n "$name" addr add "$addr/24" dev lan0
  ip -n "$name" link set lan0 up
}

lan_down() {
  local name=$1 tag=$2 bridge
  bridge=$(lan_bridge "$tag")
  ip link del "$name-l" 2>/dev/null || true
  if ip link show "$bridge" >/dev/null 2>&1 && [[ -z $(ls -A "/sys/class/net/$bridge/brif" 2>/dev/null) ]]; then
    ip link del "$bridge" 2>/dev/null || true
  fi
}

# Stop a host and remove everything it had. Idempotent; copes with state left
# half-made by a killed run.
host_down() {
  local name=$1 state=$STATE_ROOT/$1 pid leader SSH_OPTS waited sup
  if [[ ! -d $state ]]; then
    log "$name: not up"
    return 0
  fi
  # First the supervisor, so that nothing boots the host again: what it ran is
  # then stopped below like any nspawn.
  : >"$state/stopping"
  if sup=$(recorded_pid "$state" supervisor); then
    kill -s TERM "$sup" 2>/dev/null || true
    waited=0
    while pid_alive "$sup" && ((waited < 20)); do sleep 0.1; waited=$((waited + 1)); done
    if pid_alive "$sup"; then kill -s KILL "$sup" 2>/dev/null || true; fi
  fi
  leader=$(recorded_pid "$state" leader) || leader=""
  if pid=$(recorded_pid "$state" nspawn); then
    [[ -n $leader ]] || leader=$(find_leader "$pid") || leader=""
    local asked=""
    if [[ -f $state/key && -s $state/known_hosts && -f $state/index ]]; then
      ssh_opts_for "$state"
      if timeout 8 ssh "${SSH_OPTS[@]}" "root@$(host_address "$(cat "$state/index")")" \
        'systemctl poweroff --no-block' >/dev/null 2>&1; then
        asked=ssh
      fi
    fi
    if [[ -z $asked && -n $leader ]]; then
      kill -s SIGRTMIN+4 "$leader" 2>/dev/null && asked=signal
    fi
    log "$name: powering off${asked:+ (via $asked)}"
    waited=0
    while pid_alive "$pid" && ((waited < DOWN_TIMEOUT * 5)); do
      sleep 0.2
      waited=$((waited + 1))
      # poweroff over ssh not taking effect: ask PID 1 directly
      if ((waited == DOWN_TIMEOUT * 5 / 2)) && [[ -n $leader ]]; then
        kill -s SIGRTMIN+4 "$leader" 2>/dev/null || true
      fi
    done
    if pid_alive "$pid"; then
      log "$name: still running after ${DOWN_TIMEOUT}s, killing systemd-nspawn $pid"
      kill -s KILL "$pid" 2>/dev/null || true
      waited=0
      while pid_alive "$pid" && ((waited < 50)); do sleep 0.1; waited=$((waited + 1)); done
    fi
  fi
  # The container's init outliving its nspawn (nspawn was killed, e.g. by
  # kill -9 on an earlier run): power it off, then kill it (killing the init
  # of a PID namespace ends every process in it).
  if ! leader=$(recorded_pid "$state" leader); then
    leader=$(find_leader_in_netns "$name") || leader=""
  fi
  if [[ -n $leader ]] && pid_alive "$leader"; then
    log "$name: container init $leader outlived systemd-nspawn, powering it off"
    kill -s SIGRTMIN+4 "$leader" 2>/dev/null || true
    waited=0
    while pid_alive "$leader" && ((waited < 50)); do sleep 0.2; waited=$((waited + 1)); done
    if pid_alive "$leader"; then
      log "$name: killing container init $leader"
      kill -s KILL "$leader" 2>/dev/null || true
      waited=0
      while pid_alive "$leader" && ((waited < 50)); do sleep 0.1; waited=$((waited + 1)); done
    fi
  fi

  local merged=$state/merged tries
  for tries in 1 2 3 4 5; do
    mountpoint -q "$merged" 2>/dev/null || break
    umount "$merged" 2>/dev/null && break
    sleep 0.5
    ((tries == 5)) && { log "$name: overlay busy, detaching lazily"; umount -l "$merged" || true; }
  done
  unmount_under "$state"

  if ip link show "$name-h" >/dev/null 2>&1; then
    ip link del "$name-h" 2>/dev/null || true
  fi
  if [[ -f $state/lan ]]; then
    lan_down "$name" "$(cat "$state/lan")"
  fi
  if [[ -e /run/netns/$name ]]; then
    ip netns del "$name" 2>/dev/null || true
  fi
  rm -rf --one-file-system "$state"
  log "$name: down"
}

# The supervisor of a host's nspawn (started by `up`): runs the command given,
# records its PID, and runs it again when it exits with 133, which is what
# nspawn does when the container reboots. Any other exit ends it, and so does
# `down` (the state's `stopping` file, or a TERM).
cmd_supervise() {
  local state=$1 rc pid boots=0
  shift
  [[ -d $state ]] || die "no state directory $state"
  while :; do
    "$@" </dev/null >>"$state/nspawn.log" 2>&1 &
    pid=$!
    proc_start "$pid" >"$state/nspawn.start" || true
    printf '%s\n' "$pid" >"$state/nspawn.pid"
    rc=0
    wait "$pid" || rc=$?
    if ((rc != 133)) || [[ -e $state/stopping ]]; then
      log "$(basename "$state"): systemd-nspawn exited with $rc"
      exit "$rc"
    fi
    boots=$((boots + 1))
    printf '%s\n' "$boots" >"$state/reboots"
    rm -f "$state/leader.pid" "$state/leader.start"
    log "$(basename "$state"): the host rebooted (nspawn exited with 133), booting it again"
  done
}

cmd_down() {
  (($# == 1)) || usage
  check_name "$1"
  host_down "$1"
}

cmd_down_all() {
  (($# == 0)) || usage
  local dir pid rc=0 pids=()
  for dir in "$STATE_ROOT"/*/; do
    [[ -d $dir ]] || continue
    host_down "$(basename "$dir")" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || rc=1
  done
  return "$rc"
}

cmd_ssh() {
  (($# >= 1)) || usage
  local name=$1 state SSH_OPTS
  shift
  check_name "$name"
  state=$STATE_ROOT/$name
  [[ -f $state/index && -f $state/key ]] || die "host $name is not up"
  ssh_opts_for "$state"
  exec ssh "${SSH_OPTS[@]}" "root@$(host_address "$(cat "$state/index")")" "$@"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1
  shift
  case $cmd in
    -h | --help | help) usage ;;
  esac
  need_root
  case $cmd in
    image) check_suite; cmd_image "$@" ;;
    up) check_suite; cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    down-all) cmd_down_all "$@" ;;
    ssh) cmd_ssh "$@" ;;
    _supervise) cmd_supervise "$@" ;;
    *) usage ;;
  esac
}

main "$@"
