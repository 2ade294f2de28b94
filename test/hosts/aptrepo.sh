#!/usr/bin/env bash
# Builds (or reuses) a local apt file repository holding the packages a bare
# test host lacks, with their dependencies, for provisioning tests on hosts that
# cannot reach a mirror. Usage: aptrepo.sh BARE_ROOTFS PACKAGE...
# Prints the repository directory (bind it read-only into a host at /srv/apt and
# add `deb [trusted=yes] file:/srv/apt ./`). Cached under
# /var/cache/metalship/aptrepo-<hash of the package list and the image>, built
# in a temporary directory beside it and renamed into place when complete.
set -euo pipefail
readonly CACHE=/var/cache/metalship
readonly APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o Dpkg::Use-Pty=0)
log() { printf '[aptrepo] %s\n' "$*" >&2; }

[[ $# -ge 2 ]] || { echo "usage: aptrepo.sh BARE_ROOTFS PACKAGE..." >&2; exit 2; }
base=$1; shift
[[ -d $base/etc/apt ]] || { log "not an image rootfs: $base"; exit 1; }
mapfile -t pkgs < <(printf '%s\n' "$@" | sort -u)
hash=$( { printf '%s\n' "${pkgs[@]}"; readlink -f "$base"; } | sha256sum | cut -c1-16)
final=$CACHE/aptrepo-$hash
if [[ -f $final/complete ]]; then echo "$final"; exit 0; fi

mkdir -p "$CACHE"
exec {lock}>"$CACHE/.aptrepo-$hash.lock"
flock "$lock"
if [[ -f $final/complete ]]; then echo "$final"; exit 0; fi
command -v dpkg-scanpackages >/dev/null || apt-get install -y -qq dpkg-dev >&2

tmp=$(mktemp -d "$CACHE/.aptrepo-$hash-XXXXXX")
cleanup() {
  for m in proc merged; do mountpoint -q "$tmp/$m" 2>/dev/null && { umount "$tmp/$m" || umount -l "$tmp/$m"; }; done
  mountpoint -q "$tmp/merged/proc" 2>/dev/null && umount -l "$tmp/merged/proc"
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp"/{upper,work,merged,repo}
# The image stays clean: the chroot writes into an overlay.
mount -t overlay overlay -o "lowerdir=$base,upperdir=$tmp/upper,workdir=$tmp/work" "$tmp/merged"
rm -f "$tmp/merged/etc/resolv.conf"
cp -L /etc/resolv.conf "$tmp/merged/etc/resolv.conf"
mount -t proc proc "$tmp/merged/proc"
mkdir -p "$tmp/merged/srv/debs/partial"
log "downloading ${pkgs[*]} with dependencies"
run() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$tmp/merged" "$@"; }
run apt-get "${APT_OPTS[@]}" -qq update >&2
run apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends --download-only \
  -o Dir::Cache::archives=/srv/debs "${pkgs[@]}" >&2
umount "$tmp/merged/proc"
mv "$tmp/merged/srv/debs"/*.deb "$tmp/repo/"
umount "$tmp/merged"
(cd "$tmp/repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages && gzip -9kn Packages)
printf 'packages=%s\nbuilt=%s\n' "${pkgs[*]}" "$(date -u +%FT%TZ)" > "$tmp/repo/complete"
rm -rf --one-file-system "$final"
mv "$tmp/repo" "$final"
log "built $final ($(find "$final" -maxdepth 1 -name '*.deb' | wc -l) packages)"
echo "$final"
