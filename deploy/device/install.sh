#!/usr/bin/env bash
# Install the RoadSign edge agent on a Debian 12 / Raspberry Pi OS (bookworm) device from its
# enrolment bundle, the JSON that `POST /api/v1/devices` answers (shown once: it holds the broker
# password):
#
#   curl -fsS -X POST https://fleet.example/api/v1/devices -H "Authorization: Bearer $TOKEN" \
#        -H 'Content-Type: application/json' -d '{"device_id": "bus-17", "profile": "vehicle-rpi"}' \
#        -o bundle.json
#   sudo deploy/device/install.sh --wheelhouse ./wheelhouse --fleet-url https://fleet.example bundle.json
#
# Steps: Debian packages the agent needs at run time; the agent into /opt/roadsign/venv from a
# wheelhouse (`pip wheel -c constraints.txt '.[edge]' -w wheelhouse`, offline on the device) or
# the venv already there; the bundle and profile checked (nothing is changed before they pass);
# the system user `roadsign`; the profile, broker password (0600), CA and TUF root
# (`roadsign-agent install-bundle`); the systemd unit, enabled and started.
#
# --root DIR lays everything out under DIR and leaves the machine alone: no apt, no user, no
# chown, no systemctl (each says it is skipped). --dry-run prints what would be done and changes
# nothing. Run it again with a new bundle to re-enrol (a reset password): the agent is reused.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: install.sh [--root DIR] [--dry-run] [--wheelhouse DIR] [--profile FILE]
                  [--fleet-url URL] [--no-start] BUNDLE.json

  --root DIR        install under DIR instead of / (nothing on this machine is touched)
  --dry-run         print every step, change nothing
  --wheelhouse DIR  install the agent from these wheels (pip --no-index); without it, the
                    agent already in /opt/roadsign/venv is used
  --profile FILE    base device profile (default: firmware_configs/<the bundle's profile>.yaml
                    of this checkout)
  --fleet-url URL   the fleet server's https:// base URL: turns on signed model updates
  --no-start        enable the unit but do not start it now
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=/
dry_run=0
wheelhouse=
profile=
fleet_url=
start=1
bundle=
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a folder}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a folder}; shift 2 ;;
        --profile) profile=${2:?--profile needs a file}; shift 2 ;;
        --fleet-url) fleet_url=${2:?--fleet-url needs a URL}; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) [ -z "$bundle" ] || { echo "install.sh: one bundle only" >&2; exit 2; }
           bundle=$1; shift ;;
    esac
done
[ -n "$bundle" ] || { usage >&2; exit 2; }
[ -r "$bundle" ] || { echo "install.sh: cannot read the bundle $bundle" >&2; exit 1; }
root=$(cd "$root" 2>/dev/null && pwd) || { echo "install.sh: no folder $root" >&2; exit 1; }
# Device paths; every write goes to $root$path.
venv=/opt/roadsign/venv
unit=/etc/systemd/system/roadsign-agent.service
state=/var/lib/roadsign
at() { if [ "$root" = / ]; then printf '%s' "$1"; else printf '%s%s' "$root" "$1"; fi; }

run() {  # a step that changes something: printed, and done unless --dry-run
    echo "+ $*"
    [ "$dry_run" = 1 ] || "$@"
}
machine() {  # a step on the machine itself, which --root leaves alone
    if [ "$root" != / ]; then echo "skipped (--root): $*"; else run "$@"; fi
}

if [ "$root" = / ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --root DIR / --dry-run)" >&2
    exit 1
fi

# 1. What the agent needs from Debian: venv, Tesseract for OCR, OpenCV's libraries.
machine apt-get install -y --no-install-recommends \
    python3-venv tesseract-ocr tesseract-ocr-eng libgl1 libglib2.0-0

# 2. The agent.
agent=$(at "$venv")/bin/roadsign-agent
if [ -n "$wheelhouse" ]; then
    run python3 -m venv "$(at "$venv")"
    run "$(at "$venv")/bin/pip" install --no-index --find-links "$wheelhouse" 'roadsign-fleet[edge]'
elif [ ! -x "$agent" ]; then
    echo "install.sh: no agent at $agent: pass --wheelhouse DIR" >&2
    exit 1
fi

# 3. The base profile: the one the device was enrolled with, unless named.
if [ -z "$profile" ]; then
    name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("device", {}).get("profile") or "")' "$bundle") \
        || { echo "install.sh: $bundle is not JSON" >&2; exit 1; }
    [ -n "$name" ] || { echo "install.sh: the bundle names no profile: pass --profile FILE" >&2; exit 1; }
    profile=$repo/firmware_configs/$name.yaml
fi
[ -r "$profile" ] || { echo "install.sh: no base profile $profile" >&2; exit 1; }

# 4. Check the bundle and the profile it makes before anything else changes.
install_args=("$bundle" --base-profile "$profile" --root "$root")
[ -z "$fleet_url" ] || install_args+=(--fleet-url "$fleet_url")
if [ -x "$agent" ]; then
    "$agent" install-bundle --dry-run "${install_args[@]}" >/dev/null
else
    echo "(dry run: the agent is not installed yet, so the bundle is not checked)"
fi

# 5. The user (camera access through the video group) and the state folder.
if ! getent passwd roadsign >/dev/null 2>&1 || [ "$root" != / ]; then
    machine useradd --system --user-group --home-dir "$state" --no-create-home \
        --shell /usr/sbin/nologin --groups video roadsign
fi
run install -d -m 0755 "$(at /etc/roadsign)" "$(at /etc/roadsign/tls)"
run install -d -m 0750 "$(at "$state")"

# 6. Profile, password, CA, TUF root.
echo "+ roadsign-agent install-bundle ${install_args[*]}"
if [ "$dry_run" = 1 ]; then
    if [ -x "$agent" ]; then "$agent" install-bundle --dry-run "${install_args[@]}"; fi
else
    "$agent" install-bundle "${install_args[@]}"
fi
machine chown -R roadsign:roadsign "$state"

# 7. The unit.
run install -D -m 0644 "$here/roadsign-agent.service" "$(at "$unit")"
machine systemctl daemon-reload
if [ "$start" = 1 ]; then
    machine systemctl enable --now roadsign-agent.service
else
    machine systemctl enable roadsign-agent.service
fi
echo "installed: roadsign-agent for $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["device"]["device_id"])' "$bundle" 2>/dev/null || echo "the bundle's device")"
