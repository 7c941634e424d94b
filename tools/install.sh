#!/usr/bin/env bash
# Install openscan-pi as a system service on Raspberry Pi OS (Lite or desktop, bookworm or newer).
#
#   sudo tools/install.sh [--token TOKEN] [--model MODEL] [--socket]
#   sudo tools/install.sh --uninstall
#   tools/install.sh --dry-run [...]          (print the plan; needs no root, changes nothing)
#
# Idempotent: run it again after `git pull` to reinstall this checkout and restart the daemon.
#
# What it sets up:
#   apt        python3-picamera2, python3-lgpio, python3-gpiozero, python3-systemd, ... (the
#              camera and GPIO stacks only exist as Raspberry Pi OS packages), python3-opencv
#              (fuses focus stacks on the device)
#   user       system user and group `openscan` (no login, home /var/lib/openscan-pi), in the groups
#              gpio and video; the user who ran sudo joins group `openscan` (socket access)
#   venv       /opt/openscan-pi/venv with --system-site-packages (so the apt packages above are
#              visible), holding this checkout (copied to /opt/openscan-pi/src first, so the build
#              leaves no root-owned files in the checkout); /usr/local/bin/openscan-pi links to it
#   config     /etc/openscan-pi/config.yaml (0640 root:openscan), written only when missing
#   token      /etc/openscan-pi/token.env (0600 root:root) with OPENSCAN_PI_TOKEN=..., written only
#              with --token. systemd reads it (EnvironmentFile=) as root before starting the
#              daemon, and $OPENSCAN_PI_TOKEN overrides cloud.token; members of group openscan,
#              who can read config.yaml, cannot read the token.
#   units      /etc/systemd/system/openscan-pi.service (enabled and started) and
#              openscan-pi.socket (enabled only with --socket)
#
# --uninstall stops and removes the units, /opt/openscan-pi, the link and the user and group
# openscan; it keeps the scans in /var/lib/openscan-pi and the config in /etc/openscan-pi.
set -euo pipefail

readonly PREFIX=/opt/openscan-pi
readonly VENV=$PREFIX/venv
readonly SRC=$PREFIX/src
readonly BIN_LINK=/usr/local/bin/openscan-pi
readonly ETC_DIR=/etc/openscan-pi
readonly CONFIG=$ETC_DIR/config.yaml
readonly TOKEN_FILE=$ETC_DIR/token.env
readonly DATA_DIR=/var/lib/openscan-pi
readonly UNIT_DIR=/etc/systemd/system
readonly SERVICE=openscan-pi.service
readonly SOCKET=openscan-pi.socket
readonly USER_NAME=openscan
readonly DEVICE_GROUPS=(gpio video)
# The daemon's own dependencies (PyYAML, requests, urllib3, tqdm, gpiozero, numpy, Pillow) come
# from apt too, so that pip finds them satisfied and downloads nothing; setuptools and wheel
# build this checkout without network access (--no-build-isolation).
readonly APT_PACKAGES=(
  python3-picamera2 python3-lgpio python3-gpiozero python3-systemd python3-yaml python3-requests
  python3-venv python3-numpy python3-pil python3-tqdm python3-urllib3 python3-setuptools
  python3-wheel python3-opencv python3-aiohttp libjs-three
)
readonly MODELS="classic mini mini-v2 midi simulated"
# The system Python (not one from pyenv or similar): the apt packages live in its site-packages.
readonly PYTHON=/usr/bin/python3

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
PROG=$(basename "$0")
readonly PROG

DRY_RUN=0
UNINSTALL=0
WITH_SOCKET=0
TOKEN=""
MODEL=""

usage() {
  cat <<EOF
Usage: sudo $PROG [OPTIONS]

Install openscan-pi from this checkout ($REPO) as a systemd service on
Raspberry Pi OS (bookworm or newer). Safe to run again: it reinstalls and restarts.

Options:
  --token TOKEN   store your OpenScan Cloud token in $TOKEN_FILE (mode 0600,
                  read by systemd only); "--token -" reads it from standard input
  --model MODEL   rig.model of a new config: $MODELS
                  (an existing $CONFIG is kept as it is)
  --socket        also enable socket activation ($SOCKET)
  --uninstall     stop and remove the service, the venv and the user openscan;
                  keeps $DATA_DIR (scans) and $ETC_DIR (config, token)
  --dry-run       print every step instead of running it (no root needed)
  -h, --help      show this help
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 1
}

note() {
  echo "==> $*"
}

warn() {
  echo "$PROG: warning: $*" >&2
}

# Print a command (quoted for a shell), then run it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if ((!DRY_RUN)); then
    "$@"
  fi
}

# Write a file atomically: created 0600 by mktemp, then given its owner and mode, then renamed over
# the old one, so that it is never readable by the wrong people. $4 is what --dry-run shows.
write_file() {
  local path=$1 mode=$2 owner=$3 content=$4 shown=${5-$4} tmp
  echo "+ write $path (mode $mode, owner $owner):"
  printf '%s\n' "$shown" | sed 's/^/    | /'
  if ((DRY_RUN)); then
    return
  fi
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}

user_exists() {
  getent passwd "$1" >/dev/null
}

group_exists() {
  getent group "$1" >/dev/null
}

in_group() {  # user group
  id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qx "$2"
}

unit_active() {
  command -v systemctl >/dev/null && systemctl is-active --quiet "$1" 2>/dev/null
}

parse_args() {
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --uninstall) UNINSTALL=1 ;;
      --socket) WITH_SOCKET=1 ;;
      --token)
        if (($# < 2)) || [[ $2 == --* ]]; then
          die "--token needs a value (the token, or - to read it from standard input)"
        fi
        TOKEN=$2
        shift
        ;;
      --token=*) TOKEN=${1#--token=} ;;
      --model)
        if (($# < 2)) || [[ $2 == --* ]]; then
          die "--model needs a value: one of $MODELS"
        fi
        MODEL=$2
        shift
        ;;
      --model=*) MODEL=${1#--model=} ;;
      -h | --help)
        usage
        exit 0
        ;;
      *) die "unknown option $1 (see $PROG --help)" ;;
    esac
    shift
  done
  if [[ $TOKEN == "-" ]]; then
    IFS= read -r TOKEN || [[ -n $TOKEN ]] || die "--token -: nothing on standard input"
  fi
  if [[ -n $TOKEN && ! $TOKEN =~ ^[A-Za-z0-9._~+/=-]+$ ]]; then
    die "--token: a token is letters, digits and ._~+/=- only (check what you pasted)"
  fi
  if [[ -n $MODEL && " $MODELS " != *" $MODEL "* ]]; then
    die "--model: $MODEL is not one of $MODELS"
  fi
  if ((UNINSTALL)) && [[ -n $TOKEN || -n $MODEL ]]; then
    die "--uninstall takes no --token or --model"
  fi
}

preflight() {
  if ((DRY_RUN)); then
    note "dry run: nothing is changed; + lines are the commands an install would run"
  elif ((EUID != 0)); then
    die "run me as root: sudo $0${*:+ $*} (or --dry-run to see what it would do)"
  fi
  if ((UNINSTALL)); then
    return
  fi
  if [[ -x $PYTHON ]] && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    die "$PYTHON is older than 3.11: openscan-pi needs Raspberry Pi OS bookworm or newer"
  fi
  [[ -f $REPO/setup.cfg && -f $REPO/systemd/$SERVICE ]] ||
    die "$REPO is not an openscan-pi checkout (run the tools/install.sh inside it)"
  if ((DRY_RUN)); then
    return
  fi
  command -v apt-get >/dev/null || die "no apt-get here: this installer is for Raspberry Pi OS"
  [[ -d /run/systemd/system ]] || die "systemd is not running here: the daemon needs it"
  if ! grep -qs "Raspberry Pi" /proc/device-tree/model; then
    warn "this does not look like a Raspberry Pi: the service will fail without a camera and GPIO" \
      "(rig.model: simulated runs without them)"
  fi
}

install_packages() {
  note "apt packages"
  run apt-get update
  if ((!DRY_RUN)) && ! apt-cache show python3-picamera2 >/dev/null 2>&1; then
    die "python3-picamera2 is not in your apt sources: this installer is for Raspberry Pi OS (bookworm or newer)"
  fi
  # No recommends: on Lite they would pull in Qt and a desktop for camera previews.
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
}

setup_user() {
  note "user and group $USER_NAME"
  if group_exists "$USER_NAME"; then
    echo "group $USER_NAME exists"
  else
    run groupadd --system "$USER_NAME"
  fi
  if user_exists "$USER_NAME"; then
    echo "user $USER_NAME exists"
  else
    run useradd --system --gid "$USER_NAME" --home-dir "$DATA_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "OpenScan scanner daemon" "$USER_NAME"
  fi
  local group
  for group in "${DEVICE_GROUPS[@]}"; do
    if ! group_exists "$group"; then
      # The unit names them in SupplementaryGroups= and would not start without them.
      warn "group $group is missing (not Raspberry Pi OS?): creating it; its devices need a udev rule" \
        "giving them to group $group"
      run groupadd --system "$group"
    fi
    if in_group "$USER_NAME" "$group"; then
      echo "user $USER_NAME is in group $group"
    else
      run usermod --append --groups "$group" "$USER_NAME"
    fi
  done
  # Whoever ran sudo may talk to the daemon: its socket is 0660, group openscan.
  if [[ -n ${SUDO_USER-} && $SUDO_USER != root ]]; then
    if in_group "$SUDO_USER" "$USER_NAME"; then
      echo "user $SUDO_USER is in group $USER_NAME"
    else
      run usermod --append --groups "$USER_NAME" "$SUDO_USER"
      ADDED_USER=$SUDO_USER
    fi
  fi
}

install_venv() {
  note "venv $VENV with this checkout"
  run install -d -m 0755 -o root -g root "$PREFIX"
  if [[ -x $VENV/bin/python ]]; then
    echo "venv $VENV exists"
  else
    run "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
  # A clean copy of the checkout: pip builds in the source folder, and a build as root would leave
  # root-owned build/ and *.egg-info files in the user's checkout.
  run rm -rf "$SRC" "$SRC.tar"
  run install -d -m 0755 -o root -g root "$SRC"
  run tar -C "$REPO" --exclude=./.git --exclude=./build --exclude='./*.egg-info' --exclude=./.venv \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache -cf "$SRC.tar" .
  run tar -C "$SRC" --no-same-owner -xf "$SRC.tar"
  run rm -f "$SRC.tar"
  # A local folder is always reinstalled; dependencies already provided by apt are kept.
  run env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --no-build-isolation "$SRC"
  run ln -sfn "$VENV/bin/openscan-pi" "$BIN_LINK"
}

default_config() {
  cat <<EOF
# openscan-pi configuration: only the keys you change. Every key with its default and meaning:
#   $SRC/config/openscan-pi.yaml
# After a change: sudo systemctl reload openscan-pi (taken when the scanner is idle).
# A mistake stops the daemon with one line naming the key: journalctl -u openscan-pi -n 20

rig:
  # classic, mini (Greenshield), mini-v2, midi (Blackshield) or simulated.
  model: ${MODEL:-classic}

# Your OpenScan Cloud token is not kept here but in $TOKEN_FILE
# (OPENSCAN_PI_TOKEN=..., mode 0600, read by systemd only; written by
# sudo tools/install.sh --token TOKEN); it overrides cloud.token. For the commands you run
# without the daemon (upload, download, token), export OPENSCAN_PI_TOKEN in your shell.
# cloud:
#   token: ""
EOF
}

install_config() {
  note "config $ETC_DIR"
  # The folder is world-readable so that `openscan-pi` run by anyone finds config.yaml (and, not in
  # group openscan, says it cannot read it); the files in it are not.
  run install -d -m 0755 -o root -g root "$ETC_DIR"
  if [[ -e $CONFIG ]]; then
    echo "keeping $CONFIG"
    [[ -z $MODEL ]] || warn "--model ignored: $CONFIG exists (set rig.model there)"
    # The daemon (group openscan) must be able to read it; others need not.
    run chown "root:$USER_NAME" "$CONFIG"
    run chmod 0640 "$CONFIG"
  else
    write_file "$CONFIG" 0640 "root:$USER_NAME" "$(default_config)"
  fi
  if [[ -n $TOKEN ]]; then
    write_file "$TOKEN_FILE" 0600 root:root "OPENSCAN_PI_TOKEN=$TOKEN" "OPENSCAN_PI_TOKEN=<hidden>"
  elif [[ -e $TOKEN_FILE ]]; then
    echo "keeping $TOKEN_FILE"
    run chown root:root "$TOKEN_FILE"
    run chmod 0600 "$TOKEN_FILE"
  else
    echo "no $TOKEN_FILE: add your token with --token TOKEN"
  fi
}

install_units() {
  note "systemd units"
  local was_active=0
  if unit_active "$SERVICE"; then
    was_active=1
  fi
  run install -m 0644 -o root -g root "$REPO/systemd/$SERVICE" "$REPO/systemd/$SOCKET" "$UNIT_DIR/"
  run systemctl daemon-reload
  if ((WITH_SOCKET)); then
    # Before the service: a service that is (re)started while its socket unit listens takes that
    # socket over instead of binding its own.
    run systemctl enable --now "$SOCKET"
  fi
  run systemctl enable --now "$SERVICE"
  if ((was_active)); then
    # It was running the old code: restart it (its jobs continue from their last durable step).
    run systemctl restart "$SERVICE"
  fi
}

uninstall() {
  note "stopping and removing openscan-pi"
  run systemctl disable --now "$SOCKET" "$SERVICE" || warn "systemctl disable failed (not installed?)"
  run rm -f "$UNIT_DIR/$SERVICE" "$UNIT_DIR/$SOCKET"
  run systemctl daemon-reload
  run systemctl reset-failed "$SERVICE" || true
  # The link only if it is ours.
  if [[ $(readlink "$BIN_LINK" 2>/dev/null) == "$VENV/bin/openscan-pi" ]]; then
    run rm -f "$BIN_LINK"
  fi
  run rm -rf "$PREFIX"
  if user_exists "$USER_NAME"; then
    run userdel "$USER_NAME"
  else
    echo "no user $USER_NAME"
  fi
  # userdel removes the group of the same name too, unless it is someone's primary group.
  if group_exists "$USER_NAME"; then
    run groupdel "$USER_NAME" 2>/dev/null || ((DRY_RUN)) || warn "group $USER_NAME kept (still in use)"
  fi
  cat <<EOF

openscan-pi is uninstalled. Kept, for a later install (remove them yourself if you wish):
  your scans, jobs and models:  sudo rm -rf $DATA_DIR
  your config and token:        sudo rm -rf $ETC_DIR
EOF
}

finish() {
  cat <<EOF

openscan-pi is installed. Check it with:
  systemctl status openscan-pi          the service (its STATUS line shows what it does)
  journalctl -u openscan-pi -f          its log
  openscan-pi status                    the daemon's state and current job
  openscan-pi doctor                    installation, hardware, socket, config, cloud and token
Config: $CONFIG (then: sudo systemctl reload openscan-pi)
EOF
  if [[ -n ${ADDED_USER-} ]]; then
    echo "User $ADDED_USER was added to group $USER_NAME: log out and in again (or run 'newgrp $USER_NAME')" \
      "before openscan-pi can reach the daemon."
  fi
}

main() {
  parse_args "$@"
  preflight "$@"
  if ((UNINSTALL)); then
    uninstall
    return
  fi
  ADDED_USER=""
  install_packages
  setup_user
  install_venv
  install_config
  install_units
  finish
}

main "$@"
