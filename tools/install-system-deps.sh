#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, and only those missing, so a second
# run costs nothing. Runs apt-get as root, or through sudo.
set -euo pipefail

packages=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu mosquitto mosquitto-clients
  fonts-dejavu-core chromium)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
