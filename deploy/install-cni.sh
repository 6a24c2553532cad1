#!/bin/sh
# flatnet's init container: installs the CNI plugin binaries into the host's CNI bin dir atomically and writes the
# conflist once the node's overlay subnet exists. Idempotent: unchanged content is not rewritten.
#
#   SRC_BIN   where the image keeps the plugin binaries     (default /opt/flatnet/cni-bin)
#   DEST_BIN  the host's CNI bin dir                         (default /opt/cni/bin)
#   CONF_SRC  the conflist template (from the ConfigMap)     (default /etc/flatnet/cni-conflist.json)
#   CONF_DEST the conflist to write                          (default /etc/cni/net.d/10-flatnet.conflist)
#   SUBNET_FILE the overlay subnet file the daemon writes    (default /run/flatnet/subnet.env)
#   WAIT_SECONDS how long to wait for the subnet file: a number of seconds (0 = do not wait, the default), or
#               "forever" to keep running as a native sidecar that writes the conflist as soon as the subnet exists
set -eu
SRC_BIN="${SRC_BIN:-/opt/flatnet/cni-bin}"
DEST_BIN="${DEST_BIN:-/opt/cni/bin}"
CONF_SRC="${CONF_SRC:-/etc/flatnet/cni-conflist.json}"
CONF_DEST="${CONF_DEST:-/etc/cni/net.d/10-flatnet.conflist}"
SUBNET_FILE="${SUBNET_FILE:-/run/flatnet/subnet.env}"
WAIT_SECONDS="${WAIT_SECONDS:-0}"
PLUGINS="bridge host-local loopback portmap vxlan"

log() { echo "install-cni: $*" >&2; }

# copy $1 to $2 via a temp file in the same directory and rename(2), unless identical already
install_file() {
  if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then return 0; fi
  tmp="$2.flatnet-tmp.$$"
  cp "$1" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$2"
  log "installed $2"
}

mkdir -p "$DEST_BIN"
# The plugins are one multi-call binary: install it once and point each plugin name at it.
# A renamed-over file never disturbs a copy that is executing (the old inode lives on), so no "text file busy".
install_file "$SRC_BIN/flatnet" "$DEST_BIN/flatnet"
for p in $PLUGINS; do
  target="$DEST_BIN/$p"
  if [ -L "$target" ] && [ "$(readlink "$target")" = "flatnet" ]; then continue; fi
  tmp="$target.flatnet-tmp.$$"
  ln -sfn flatnet "$tmp"
  mv -f "$tmp" "$target"
  log "linked $target -> flatnet"
done

# The conflist is written only once the overlay subnet exists: before that the runtime would report the network
# ready while ADD could only fail with "try again later".
write_conflist() {
  [ -s "$SUBNET_FILE" ] || return 1
  mkdir -p "$(dirname "$CONF_DEST")"
  if [ -f "$CONF_DEST" ] && cmp -s "$CONF_SRC" "$CONF_DEST"; then
    return 0
  fi
  tmp="$CONF_DEST.flatnet-tmp.$$"
  cp "$CONF_SRC" "$tmp"
  mv -f "$tmp" "$CONF_DEST"
  log "wrote $CONF_DEST"
}

if [ "$WAIT_SECONDS" = "forever" ]; then
  # Runs as a native sidecar (an init container with restartPolicy: Always): the daemon writes the subnet file after
  # this container started, so keep watching, and keep the conflist in step with the ConfigMap.
  announced=0
  while :; do
    if write_conflist; then
      [ "$announced" = 1 ] || { log "conflist in place"; announced=1; }
    fi
    sleep 2
  done
fi
waited=0
until write_conflist; do
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    log "no subnet file at $SUBNET_FILE yet; conflist not written"
    exit 0
  fi
  sleep 1
  waited=$((waited + 1))
done
log "conflist in place"
