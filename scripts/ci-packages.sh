#!/usr/bin/env bash
# The Debian packages, built, linted, installed and used as a distribution's user would
# (issue 12; the CI step after ./scripts/test.sh, see .ci/run):
#   1. build dependencies from debian/control with mk-build-deps (as root or via sudo);
#   2. dpkg-buildpackage -us -uc -b in a scratch copy of the tree (nothing is written next to it);
#   3. lintian on the result: errors fail, and so does any warning (each one is fixed or
#      overridden in debian/*.lintian-overrides with a comment saying why);
#   4. the packages installed on this machine with apt-get (their dependencies too), then
#      tests/packaging/check_installed.sh system: a C host built with pkg-config and with
#      find_package(libwsgi), and /usr/bin/libwsgi-epoll, each serving a request;
# Set LIBWSGI_PACKAGES_KEEP=DIR to keep the .debs, .changes and build log in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
started=$SECONDS
phase() { printf '\n=== ci-packages [%ds]: %s\n' "$((SECONDS - started))" "$*"; }

phase "packaging tools and build dependencies (mk-build-deps)"
scripts/install-deps.sh packaging
work=$(mktemp -d "${TMPDIR:-/tmp}/libwsgi-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && $SUDO mk-build-deps --install --remove \
    --tool 'apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends' "$src/debian/control" >"$work/build-deps.log" 2>&1) || {
  cat "$work/build-deps.log"
  exit 1
}

phase "debian/changelog and CMakeLists.txt agree on the version"
deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
cmake_version=$(sed -n 's/^project(libwsgi VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
if [ "${deb_version%%-*}" != "$cmake_version" ]; then
  echo "debian/changelog is $deb_version, CMakeLists.txt is $cmake_version: add a changelog entry" >&2
  exit 1
fi

phase "dpkg-buildpackage -us -uc -b (copy of the tree in $work/libwsgi-$cmake_version)"
mkdir "$work/libwsgi-$cmake_version"
tar --exclude='./build*' --exclude='./obj-*' --exclude=./.git -cf - . |
  tar -C "$work/libwsgi-$cmake_version" -xf -
t0=$SECONDS
# No -dbgsym packages: nothing here installs or lints them.
(cd "$work/libwsgi-$cmake_version" &&
  DEB_BUILD_OPTIONS="noautodbgsym ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -us -uc -b -j2) >"$work/build.log" 2>&1 || {
  tail -80 "$work/build.log"
  echo "dpkg-buildpackage failed (log above)" >&2
  exit 1
}
grep -E '^(dpkg-gensymbols|dpkg-shlibdeps): warning' "$work/build.log" && {
  echo "warnings from dpkg-gensymbols/dpkg-shlibdeps (above)" >&2
  exit 1
}
echo "built in $((SECONDS - t0)) s"
ls -l "$work"/*.deb
changes=$(ls "$work"/*.changes)
if [ -n "${LIBWSGI_PACKAGES_KEEP:-}" ]; then
  mkdir -p "$LIBWSGI_PACKAGES_KEEP"
  cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work/build.log" "$LIBWSGI_PACKAGES_KEEP"/
fi

phase "lintian (errors and warnings fail)"
lintian --fail-on error,warning --display-info "$changes" 2>&1 | tee "$work/lintian.log" || {
  echo "lintian failed (above)" >&2
  exit 1
}

phase "install the packages (apt-get, with their dependencies)"
debs=()
for d in "$work"/*.deb; do
  case $d in *-dbgsym_*) ;; *) debs+=("$d") ;; esac
done
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends --reinstall "${debs[@]}" >"$work/install.log" 2>&1 || {
  cat "$work/install.log"
  exit 1
}
dpkg -L libwsgi-servers libwsgi-dev | grep -E 'bin/|\.pc$|Config\.cmake$|/man1/|\.conf$' | sed 's/^/  /'

phase "the installed packages from outside the source tree"
sh tests/packaging/check_installed.sh system
for p in libwsgi-servers libwsgi-dev; do
  echo "$p: $(dpkg -L "$p" | grep -c '/share/man/man[0-9]/.*\.gz$' || true) man pages"
done

phase "done in $((SECONDS - started)) s"
