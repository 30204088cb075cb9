#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, and only those missing, so a second
# run costs nothing. Runs apt-get as root, or through sudo.
set -euo pipefail

packages=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu mosquitto mosquitto-clients openssl
  fonts-dejavu-core chromium)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
# The PostgreSQL server binaries: the tests start their own server from them (tests/postgres.py).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
# systemd-analyze, which verifies the device unit (tests/edge_agent/test_device_install.py); a
# container's Debian has no systemd.
command -v systemd-analyze >/dev/null || packages+=(systemd)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for package in "${packages[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  $sudo apt-get install -y -qq --no-install-recommends "$@"
}
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Debian's server package creates and starts a "main" cluster on 5432 unless told not to; nothing
# here uses one. Say so before the server is installed, and only on a machine that has no
# PostgreSQL set-up yet: an existing createcluster.conf is left as it is.
if [[ " ${missing[*]} " == *" postgresql "* ]] && ! installed postgresql-common; then
  apt_install postgresql-common
  $sudo sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf
fi
apt_install "${missing[@]}"
