#!/usr/bin/env bash
# The machine that runs Ansible (the controller) must be Linux or macOS with Python >= 3.11, make and
# an ssh client. Windows users run it inside WSL. Says what is missing in one sentence, exit 1.
set -u
fail() { printf 'nanochat-arms: %s\n' "$*" >&2; exit 1; }
case "$(uname -s)" in
  Linux | Darwin) ;;
  MINGW* | MSYS* | CYGWIN* | Windows*)
    fail "the controller runs Ansible, which does not run on Windows itself: install WSL (PowerShell as administrator: wsl --install), open Ubuntu, clone this repo there and run make inside it." ;;
  *) fail "the controller must be Linux or macOS (this is $(uname -s)); on Windows use WSL." ;;
esac
py=$(command -v python3.11 || command -v python3 || true)
[ -n "$py" ] || fail "Python 3.11 or newer is needed on the controller (Debian/Ubuntu: apt-get install python3 python3-venv; macOS: brew install python@3.11)."
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || fail "$py is Python $("$py" -c 'import platform; print(platform.python_version())'); ansible-core 2.19 needs 3.11 or newer on the controller."
"$py" -c 'import venv, ensurepip' 2>/dev/null \
  || fail "$py cannot make a venv (Debian/Ubuntu: apt-get install python3-venv)."
command -v ssh >/dev/null || fail "an ssh client is needed on the controller (Debian/Ubuntu: apt-get install openssh-client)."
exit 0
