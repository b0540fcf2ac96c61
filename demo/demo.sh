#!/usr/bin/env bash
# make demo: a file image served as /dev/ublkbN by ublk-ts, with an ext4
# filesystem made, mounted, written, checked and read back. Runs where
# ublk_drv is (make demo puts it in the VM when this kernel has none).
set -euo pipefail
cd "$(dirname "$0")/.."
ublk() { node bin/ublk "$@"; }
step() { printf '\n== %s\n' "$*"; }

work=$(mktemp -d /tmp/ublk-demo.XXXXXX)
img=$work/disk.img
mnt=$work/mnt
id=
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  [ -n "$id" ] && ublk del -n "$id" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"

step "a 256 MiB image file: $img"
truncate -s 256M "$img"

step "ublk add -t loop -f $img -q 2"
out=$(ublk add -t loop -f "$img" -q 2 --json)
echo "$out"
id=$(node -e 'console.log(JSON.parse(process.argv[1]).id)' "$out")
dev=/dev/ublkb$id
ublk list

step "mkfs.ext4 $dev"
mkfs.ext4 -q "$dev"

step "mount it on $mnt and write a few files"
mount "$dev" "$mnt"
cp -r src "$mnt/src"
head -c 32M /dev/urandom > "$mnt/random.bin"
seq 1 200000 > "$mnt/numbers.txt"
(cd "$mnt" && find . -type f | sort | xargs sha256sum) > "$work/sums"
echo "$(wc -l < "$work/sums") files, $(du -sh "$mnt" | cut -f1)"

step "umount, then e2fsck -fn (read-only check)"
umount "$mnt"
e2fsck -fn "$dev"

step "mount again and check every file's checksum"
mount "$dev" "$mnt"
(cd "$mnt" && sha256sum --quiet -c "$work/sums") && echo "all $(wc -l < "$work/sums") checksums match"
umount "$mnt"

step "ublk stats -n $id"
ublk stats -n "$id" | head -12

step "ublk del -n $id"
ublk del -n "$id"
id=
ublk list
echo
echo "demo done: $dev was created from a file, formatted, used, checked and deleted."
