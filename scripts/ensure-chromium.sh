#!/usr/bin/env bash
# Makes sure Debian's Chromium and its WebDriver (chromium, chromium-driver)
# are installed, for the dashboard's browser test (tests/tests/dashboard.rs):
# installs them with apt-get where missing (as root), else says how.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "keygate: installing Chromium for the browser tests (apt-get install chromium chromium-driver)" >&2
  apt-get update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
  exit 0
fi
echo "keygate: the browser tests need /usr/bin/chromium and /usr/bin/chromedriver:" \
     "sudo apt-get install chromium chromium-driver" >&2
exit 1
