#!/usr/bin/env bash
# The local lab: three (four) SSH hosts as Linux users on loopback addresses, Azurite, a fixture
# dataset, the REAL nanochat (a bare clone of ../shared/nanochat/nanochat.bundle) and a stand-in
# nanochat repo for what real nanochat cannot do on CPU (several processes, two nodes). Run as root
# on a throw-away machine.
#
#   scripts/lab.sh up      install what is missing and bring everything up (idempotent)
#   scripts/lab.sh down    stop what `up` started (by pid), remove the lab users, leave the machine clean
#   scripts/lab.sh status  one line per part
#
# Everything the lab writes lives in .lab/ (git-ignored), except the lab users' homes and
# /etc/sudoers.d/nanochat-arms-lab, which `down` removes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=${ARMS_LAB_DIR:-$ROOT/.lab}
PY=${ARMS_PYTHON:-$ROOT/.venv/bin/python}
SSH_PORT=${ARMS_LAB_SSH_PORT:-2222}
AZURITE_PORT=${ARMS_LAB_AZURITE_PORT:-10000}
# host name -> user and address; random2 exists for the two-host (multi-node) arm tests; the
# fresh-* hosts are never set up: check mode is tested against them (it must predict, not touch)
HOSTS=(prep:arms-prep:127.0.0.2 top:arms-top:127.0.0.3 random:arms-random:127.0.0.4 random2:arms-random2:127.0.0.5
  fresh-prep:arms-fresh-prep:127.0.0.6 fresh-top:arms-fresh-top:127.0.0.7 fresh-random:arms-fresh-random:127.0.0.8)
SUDOERS=/etc/sudoers.d/nanochat-arms-lab
# the real nanochat: a git bundle of its master branch, shipped beside this repo in shared/
BUNDLE=${ARMS_NANOCHAT_BUNDLE:-$ROOT/../shared/nanochat/nanochat.bundle}
# in each lab user's home: the checkout whose lab made the user
# the machine's autogroup setting before a lab turned it off (machine-wide: a lab that takes over
# from another checkout's keeps it, and the lab that goes down puts it back)
AUTOGROUP_PREV=/run/nanochat-arms-lab.autogroup
OWNER_FILE=.nanochat-arms-lab-owner
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

say() { printf '[lab] %s\n' "$*"; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

remove_user() {
  # a lab user, its processes, its home and what it left in the shared temp folders
  local user=$1 uid
  uid=$(id -u "$user")
  pkill -KILL -u "$user" 2>/dev/null || true
  sleep 0.2
  find /tmp /var/tmp /dev/shm -mindepth 1 -maxdepth 1 -uid "$uid" -exec rm -rf {} + 2>/dev/null || true
  userdel -r "$user" >/dev/null 2>&1 || userdel "$user"
}

need_root() { [ "$(id -u)" = 0 ] || die "the lab creates users and starts sshd: run it as root (on a throw-away machine)."; }

install_packages() {
  local missing=()
  for p in openssh-server openssh-client rsync sudo git python3-venv python3-pip build-essential; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v npm >/dev/null; then
    say "installing Node.js and npm (for Azurite)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  if [ ! -x "$LAB/npm/node_modules/.bin/azurite-blob" ]; then
    say "installing Azurite (npm)"
    mkdir -p "$LAB/npm"
    (cd "$LAB/npm" && npm install --no-audit --no-fund --silent azurite@3.35.0 >/dev/null 2>&1) \
      || die "npm install azurite failed"
  fi
}

make_users() {
  mkdir -p "$LAB/ssh"
  chmod 700 "$LAB/ssh"
  [ -f "$LAB/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C nanochat-arms-lab -f "$LAB/ssh/id_ed25519"
  [ -f "$LAB/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$LAB/ssh/ssh_host_ed25519_key"
  local sudo_lines="" owner
  for h in "${HOSTS[@]}"; do
    IFS=: read -r name user addr <<<"$h"
    # The lab users are machine-wide; a lab left up by another checkout (its dataset path, its
    # stand-in repo) would make this one's first run fail or pass on stale state: start them afresh.
    if id "$user" >/dev/null 2>&1; then
      owner=$(cat "/home/$user/$OWNER_FILE" 2>/dev/null || true)
      if [ "$owner" != "$LAB" ]; then
        say "host $name ($user) was set up by ${owner:-an unknown checkout}: removing it to start afresh"
        remove_user "$user"
      fi
    fi
    if ! id "$user" >/dev/null 2>&1; then
      # what an earlier user of that name left in the shared temp folders (torch.compile's
      # /tmp/torchinductor_<user>) belongs to another uid now: the new user could not use it
      rm -rf "/tmp/torchinductor_$user"
      useradd -m -s /bin/bash -c "nanochat-arms lab host $name" "$user"
      printf '%s\n' "$LAB" >"/home/$user/$OWNER_FILE"
      chmod 444 "/home/$user/$OWNER_FILE"
    fi
    usermod -p '*' "$user"  # unlock for key auth (useradd leaves '!')
    install -d -m 700 -o "$user" -g "$user" "/home/$user/.ssh"
    install -m 600 -o "$user" -g "$user" "$LAB/ssh/id_ed25519.pub" "/home/$user/.ssh/authorized_keys"
    # the stand-in nanochat repo is root's: let the lab users clone it
    su - "$user" -c "git config --global --replace-all safe.directory '*'" >/dev/null
    sudo_lines+="$user ALL=(ALL) NOPASSWD: ALL"$'\n'
  done
  printf '# nanochat-arms lab hosts (removed by scripts/lab.sh down)\n%s' "$sudo_lines" >"$SUDOERS.tmp"
  chmod 440 "$SUDOERS.tmp"
  visudo -cf "$SUDOERS.tmp" >/dev/null || die "generated sudoers file is invalid"
  mv "$SUDOERS.tmp" "$SUDOERS"
}

stop_foreign() {
  # Another checkout's lab sshd or Azurite holds the lab's fixed ports: stop it (a lab's own
  # process: an sshd whose config is a lab's, or Azurite on the lab's port) rather than fail to
  # bind or, worse, let the tests talk to the other lab.
  local pid args cfg
  for pid in $(pgrep -f '/usr/sbin/sshd -f |azurite-blob .*--blobPort '"$AZURITE_PORT"' ' || true); do
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    case "$args" in *"$LAB/"*) continue ;; esac
    if [[ "$args" == *sshd* ]]; then
      cfg=$(sed -n 's|.*/usr/sbin/sshd -f \([^ ]*\).*|\1|p' <<<"$args")
      [[ "$cfg" == */.lab/ssh/sshd_config ]] || head -1 "$cfg" 2>/dev/null | grep -q '^# nanochat-arms lab sshd' || continue
    fi
    say "stopping another checkout's lab process $pid: ${args:0:120}"
    kill "$pid" 2>/dev/null || true
  done
}

start_sshd() {
  local cfg="$LAB/ssh/sshd_config" listen="" users=""
  for h in "${HOSTS[@]}"; do
    IFS=: read -r _ user addr <<<"$h"
    listen+="ListenAddress $addr:$SSH_PORT"$'\n'
    users+=" $user"
  done
  cat >"$cfg" <<EOF
# nanochat-arms lab sshd: loopback only, key auth only
${listen}HostKey $LAB/ssh/ssh_host_ed25519_key
PidFile $LAB/ssh/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
AllowUsers${users}
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
EOF
  mkdir -p /run/sshd
  if alive "$LAB/ssh/sshd.pid"; then
    kill -HUP "$(cat "$LAB/ssh/sshd.pid")"
  else
    /usr/sbin/sshd -t -f "$cfg" || die "sshd config test failed"
    /usr/sbin/sshd -f "$cfg"
  fi
  for h in "${HOSTS[@]}"; do
    IFS=: read -r name user addr <<<"$h"
    for _ in $(seq 50); do
      ssh -q -i "$LAB/ssh/id_ed25519" -p "$SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null "$user@$addr" true 2>/dev/null && continue 2
      sleep 0.2
    done
    die "host $name ($user@$addr:$SSH_PORT) does not answer over ssh"
  done
}

start_azurite() {
  mkdir -p "$LAB/azurite"
  if ! alive "$LAB/azurite.pid"; then
    setsid "$LAB/npm/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
      --location "$LAB/azurite" --silent --loose --skipApiVersionCheck \
      </dev/null >"$LAB/azurite.log" 2>&1 &
    echo $! >"$LAB/azurite.pid"
  fi
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$AZURITE_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "Azurite did not start (see $LAB/azurite.log)"
}

write_secrets() {
  # Lab credentials: random, never committed, mode 0600; the Makefile exports them for ansible.
  if [ ! -f "$LAB/secrets.env" ]; then
    umask 077
    local wb hf
    wb=$(head -c 4000 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 77)
    hf=$(head -c 4000 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 34)
    {
      echo "WANDB_API_KEY=wandb_v1_$wb"
      echo "HF_TOKEN=hf_$hf"
      echo "AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$AZURITE_PORT/devstoreaccount1;'"
    } >"$LAB/secrets.env"
    umask 022
  fi
  chmod 600 "$LAB/secrets.env"
}

seed_data() {
  if [ ! -f "$LAB/data/fortified/.complete" ]; then
    say "writing the fixture dataset (fineweb-edu-fortified schema)"
    rm -rf "$LAB/data/fortified"
    "$PY" "$ROOT/scripts/make_fixture_dataset.py" --out "$LAB/data/fortified" --rows 24000 --dumps 3 \
      --files-per-dump 2 --seed 7 >/dev/null
    touch "$LAB/data/fortified/.complete"
  fi
  # a zip shaped like nanochat's eval_bundle.zip (byte-identical every time), placed instead of a download
  PYTHONPATH="$ROOT/plugins/controller" "$PY" -c 'import sys, arms_fixture; arms_fixture.write_eval_bundle(sys.argv[1])' \
    "$LAB/data/eval_bundle.zip"
  chmod -R a+rX "$LAB/data"
  "$PY" "$ROOT/tests/lab/seed_azurite.py" --dataset "$LAB/data/fortified" \
    --port "$AZURITE_PORT" --container quratingfiltered --prefix top16.5/
  real_nanochat
  # a one-wheel stand-in for the PyTorch index nanochat's pyproject names (torch 2.9.1+cu128), so the
  # GPU venv's index resolution is tested without the real index or GPUs
  "$PY" "$ROOT/tests/lab/fake_torch_index.py" "$LAB/torch-index" >/dev/null
  chmod -R a+rX "$LAB/torch-index"
  # idempotent: rebuilt only when the stand-in's template changed
  "$PY" "$ROOT/tests/lab/build_standin.py" --force "$LAB/nanochat-standin.git" >/dev/null
  chmod -R a+rX "$LAB/nanochat-standin.git"
}

real_nanochat() {
  # The lab's hosts clone the real nanochat from here (inventory/lab overrides the repo URL only,
  # never the commit). Fetched again when the bundle has moved on; a stand-in left here by an older
  # lab is replaced.
  [ -f "$BUNDLE" ] || die "the real nanochat bundle is missing: $BUNDLE (set ARMS_NANOCHAT_BUNDLE)"
  local want have
  want=$(git bundle list-heads "$BUNDLE" | awk '$2 == "refs/heads/master" {print $1}')
  [ -n "$want" ] || die "$BUNDLE has no master branch"
  have=$(git --git-dir "$LAB/nanochat.git" rev-parse -q --verify refs/heads/master 2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    say "cloning the real nanochat from $(basename "$BUNDLE") (master ${want:0:7})"
    rm -rf "$LAB/nanochat.git" "$LAB/nanochat.git.tmp"
    git clone -q --bare "$BUNDLE" "$LAB/nanochat.git.tmp"
    mv "$LAB/nanochat.git.tmp" "$LAB/nanochat.git"
  fi
  chmod -R a+rX "$LAB/nanochat.git"
}

quiet_training() {
  # The lab trains on the CPU that Ansible needs too; its runs start at nice 19 (arms_train_niceness)
  # to stand in for GPU work that leaves a node's CPU free. With autogroup scheduling every session
  # (torchrun puts each worker in one) competes as a group whatever its nice value: turn it off
  # while the lab is up (`down` puts the old value back).
  local knob=/proc/sys/kernel/sched_autogroup_enabled
  [ -w "$knob" ] || return 0
  if [ "$(cat "$knob")" != 0 ]; then
    cat "$knob" >"$AUTOGROUP_PREV"
    echo 0 >"$knob" && say "autogroup scheduling off while the lab is up (so the lab's nice 19 training yields)"
  fi
}

cmd_up() {
  need_root
  install_packages
  [ -x "$PY" ] || die "no project venv at $PY: run 'make venv' first"
  chmod a+rx "$ROOT" "$LAB" 2>/dev/null || true
  stop_foreign
  make_users
  start_sshd
  start_azurite
  quiet_training
  write_secrets
  seed_data
  say "up: hosts ${HOSTS[*]%%:*} on 127.0.0.2-$((${#HOSTS[@]} + 1)):$SSH_PORT, Azurite on 127.0.0.1:$AZURITE_PORT"
}

cmd_down() {
  need_root
  for h in "${HOSTS[@]}"; do
    IFS=: read -r _ user _ <<<"$h"
    if id "$user" >/dev/null 2>&1; then
      pkill -KILL -u "$user" 2>/dev/null || true
    fi
  done
  if alive "$LAB/ssh/sshd.pid"; then kill "$(cat "$LAB/ssh/sshd.pid")"; say "sshd stopped"; fi
  rm -f "$LAB/ssh/sshd.pid"
  if alive "$LAB/azurite.pid"; then kill -- "-$(cat "$LAB/azurite.pid")" 2>/dev/null || kill "$(cat "$LAB/azurite.pid")"; say "Azurite stopped"; fi
  rm -f "$LAB/azurite.pid"
  # ssh ControlPersist masters the controller left behind (by pid)
  for pid in $(pgrep -f 'ssh: .*\.ansible/cp' 2>/dev/null || true); do kill "$pid" 2>/dev/null || true; done
  for h in "${HOSTS[@]}"; do
    IFS=: read -r _ user _ <<<"$h"
    if id "$user" >/dev/null 2>&1; then remove_user "$user"; fi
  done
  rm -f "$SUDOERS"
  if [ -f "$AUTOGROUP_PREV" ]; then
    cat "$AUTOGROUP_PREV" >/proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || true
    rm -f "$AUTOGROUP_PREV"
  fi
  # keep downloads (.lab/npm, .lab/bench); drop state that belongs to one lab
  rm -rf "$LAB/ssh" "$LAB/azurite" "$LAB/azurite.log" "$LAB/secrets.env" "$LAB/runner"
  say "down: lab users removed, processes stopped"
}

cmd_reset() {
  # make the named lab hosts new again (user, home, processes, temp files), as if never set up
  need_root
  [ $# -gt 0 ] || die "usage: scripts/lab.sh reset HOST... (e.g. fresh-prep fresh-top fresh-random)"
  local name found h hname user
  for name in "$@"; do
    found=""
    for h in "${HOSTS[@]}"; do
      IFS=: read -r hname user _ <<<"$h"
      if [ "$hname" = "$name" ]; then
        found=1
        if id "$user" >/dev/null 2>&1; then remove_user "$user"; fi
      fi
    done
    [ -n "$found" ] || die "no lab host named $name (hosts: ${HOSTS[*]%%:*})"
  done
  make_users
  say "reset: $* made new"
}

cmd_status() {
  alive "$LAB/ssh/sshd.pid" && say "sshd: running (pid $(cat "$LAB/ssh/sshd.pid"))" || say "sshd: stopped"
  alive "$LAB/azurite.pid" && say "Azurite: running (pid $(cat "$LAB/azurite.pid"))" || say "Azurite: stopped"
  for h in "${HOSTS[@]}"; do
    IFS=: read -r name user addr <<<"$h"
    id "$user" >/dev/null 2>&1 && say "host $name: $user@$addr:$SSH_PORT" || say "host $name: absent"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) shift; cmd_reset "$@" ;;
  *) die "usage: scripts/lab.sh up|down|status|reset HOST..." ;;
esac
