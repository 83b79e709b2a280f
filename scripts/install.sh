#!/usr/bin/env bash
# Installs everything raypipe needs on a fresh Debian machine: system packages, then the virtual environment.
# Idempotent: a second run only checks. The README, the Makefile, the Dockerfile and CI all call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
# The report's browser tests drive Debian's chromium (in APT_PACKAGES); Playwright must never fetch its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
VENV=${RAYPIPE_VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
APT_PACKAGES=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd tesseract-ocr-chi-sim fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei libglib2.0-0 libgl1 chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "raypipe install: apt packages ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.raypipe-installed"
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "raypipe install: Python packages into $VENV (first time: a few minutes, ~6 GB with torch)"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r requirements.txt
"$VENV/bin/pip" install -q --no-deps --require-hashes -r requirements-nodeps.txt
"$VENV/bin/pip" install -q --no-deps -e .
echo "$want" > "$stamp"
echo "raypipe install: done"
