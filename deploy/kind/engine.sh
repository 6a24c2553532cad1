#!/usr/bin/env bash
# Makes sure a Docker engine that can run kind nodes is up (sourced by up.sh; `bash deploy/kind/engine.sh` alone
# works too). On a machine with a working Docker this does nothing. Otherwise it installs Debian's docker.io and
# starts dockerd itself with two changes, both recorded under /run/flatnet-kind so kind:down can undo them:
#  - --iptables=false --ip6tables=false: dockerd leaves the host's netfilter alone (its default sets FORWARD to DROP
#    and adds DOCKER chains); published ports are served by docker-proxy instead;
#  - a runc wrapper as default runtime, for hosts whose capability bounding set lacks a capability that Docker's
#    privileged mode asks for (here CAP_SYS_RESOURCE): it removes the missing ones from the container's config.json
#    (create/run) and from the process file of `exec --process`, then runs the real runc.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing_caps() {
  # capabilities Docker's privileged mode grants that this process's bounding set lacks
  local bnd last i names=""
  bnd=$((16#$(sed -n 's/^CapBnd:\s*//p' /proc/self/status)))
  last=$(cat /proc/sys/kernel/cap_last_cap)
  local all=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE
    SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL
    SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  for ((i = 0; i <= last && i < ${#all[@]}; i++)); do
    (( (bnd >> i) & 1 )) || names="$names CAP_${all[$i]}"
  done
  echo "${names# }"
}

write_wrapper() {
  local drop="$1" wrapper="$KIND_STATE/runc-wrapper"
  mkdir -p "$KIND_STATE"
  cat > "$wrapper.tmp" <<WRAP
#!/bin/sh
# Written by flatnet's deploy/kind/engine.sh: drops capabilities this host cannot grant, then runs runc.
DROP='$drop'
filter() { # \$1: a JSON file holding an OCI process (or a whole config under .process)
  [ -f "\$1" ] || return 0
  jq --arg d "\$DROP" '(\$d | split(" ")) as \$x
    | def strip: if type == "array" then map(select(. as \$c | \$x | index(\$c) | not)) else . end;
    if has("process") then .process.capabilities |= (if . then map_values(strip) else . end)
    else .capabilities |= (if . then map_values(strip) else . end) end' "\$1" > "\$1.fl" && mv "\$1.fl" "\$1"
}
bundle=""; proc=""; verb=""; prev=""
for a in "\$@"; do
  case "\$prev" in --bundle|-b) bundle="\$a" ;; --process|-p) proc="\$a" ;; esac
  case "\$a" in --bundle=*) bundle="\${a#--bundle=}" ;; --process=*) proc="\${a#--process=}" ;;
    create|run|exec) [ -z "\$verb" ] && verb="\$a" ;; esac
  prev="\$a"
done
case "\$verb" in
  create|run) filter "\${bundle:-.}/config.json" ;;
  exec) [ -n "\$proc" ] && filter "\$proc" ;;
esac
exec runc "\$@"
WRAP
  chmod 0755 "$wrapper.tmp" && mv "$wrapper.tmp" "$wrapper"
  echo "$wrapper"
}

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

ensure_engine() {
  if ! command -v dockerd >/dev/null || ! command -v jq >/dev/null; then
    klog "installing docker.io (Debian) and jq"
    export DEBIAN_FRONTEND=noninteractive
    # no service starts from the package scripts (a stock dockerd would set the host's FORWARD policy to DROP)
    local policy=""
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1; }
    apt-get update -qq && apt-get install -y -qq docker.io jq >/dev/null
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  fi
  if docker_ok; then return 0; fi
  [ "$(id -u)" = 0 ] || die "starting dockerd needs root"
  local drop wrapper args
  drop=$(missing_caps)
  args=(--iptables=false --ip6tables=false --ip-masq=false --userland-proxy=true --exec-root /run/flatnet-kind/docker
    --pidfile "$KIND_STATE/dockerd.pid" --host unix:///var/run/docker.sock)
  mkdir -p "$KIND_STATE"
  if [ -n "$drop" ]; then
    wrapper=$(write_wrapper "$drop")
    args+=(--add-runtime "flatnet-runc=$wrapper" --default-runtime flatnet-runc)
    klog "this host cannot grant: $drop; privileged containers run through $wrapper"
  fi
  klog "starting dockerd (netfilter left to the host: --iptables=false)"
  nohup dockerd "${args[@]}" > "$KIND_STATE/dockerd.log" 2>&1 &
  echo $! > "$KIND_STATE/dockerd.started"
  local i
  for i in $(seq 1 60); do docker_ok && break; sleep 1; done
  docker_ok || { tail -20 "$KIND_STATE/dockerd.log" >&2; die "dockerd did not start"; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then ensure_engine; docker info --format 'docker {{.ServerVersion}}, {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}'; fi
