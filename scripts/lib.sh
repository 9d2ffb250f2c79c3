# shellcheck shell=bash
# Helpers shared by v6iot's scripts. Source it; it sets nothing up by itself.
#
#   log / warn / die        messages on stderr
#   as_root CMD...          run CMD as root (directly when root, else through sudo)
#   need_pkg CMD PKG        record that command CMD comes from Debian package PKG
#   ensure_pkgs             install the recorded packages whose command is missing
#   step NAME CMD...        run CMD as a named, timed step; the script stops if it fails
#   steps_begin             at exit, print the time of each step and name the one that failed

if [[ -t 2 ]]; then
    _B=$'\033[1m' _Y=$'\033[33m' _R=$'\033[31m' _N=$'\033[0m'
else
    _B="" _Y="" _R="" _N=""
fi
log() { printf '%s==> %s%s\n' "$_B" "$*" "$_N" >&2; }
warn() { printf '%sWARNING: %s%s\n' "$_Y" "$*" "$_N" >&2; }
die() {
    printf '%sERROR: %s%s\n' "$_R" "$*" "$_N" >&2
    exit 1
}

is_ci() { [[ "${CI:-}" == "true" ]]; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        warn "not root and no sudo: cannot run '$*'"
        return 1
    fi
}

# --- Debian packages --------------------------------------------------------

_NEED_CMDS=()
_NEED_PKGS=()
_APT_UPDATED=0

# need_pkg COMMAND PACKAGE: COMMAND must be on PATH; Debian package PACKAGE provides it.
need_pkg() {
    _NEED_CMDS+=("$1")
    _NEED_PKGS+=("$2")
}

_apt_install() {
    command -v apt-get >/dev/null 2>&1 || {
        warn "apt-get not found: install $* with your system's package manager"
        return 1
    }
    if [[ "$_APT_UPDATED" -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        _APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# ensure_pkgs: install, in one apt-get call, every recorded package whose command is missing.
# If a command is still missing afterwards: with CI=true the script fails naming it; elsewhere
# it warns loudly (the tests that need it will fail) and the warning is repeated at the end.
MISSING_TOOLS=()
ensure_pkgs() {
    local i pkgs=() cmds=()
    for i in "${!_NEED_CMDS[@]}"; do
        if ! command -v "${_NEED_CMDS[$i]}" >/dev/null 2>&1; then
            cmds+=("${_NEED_CMDS[$i]}")
            # one package may provide several commands: list it once
            [[ " ${pkgs[*]-} " == *" ${_NEED_PKGS[$i]} "* ]] || pkgs+=("${_NEED_PKGS[$i]}")
        fi
    done
    if [[ ${#pkgs[@]} -eq 0 ]]; then
        log "tools present: ${_NEED_CMDS[*]}"
        return 0
    fi
    log "installing Debian packages ${pkgs[*]} (for ${cmds[*]})"
    if ! _apt_install "${pkgs[@]}"; then
        # one unknown or broken package fails the whole call: try them one by one
        local p
        for p in "${pkgs[@]}"; do
            _apt_install "$p" || warn "apt-get install $p failed"
        done
    fi
    hash -r
    for i in "${!_NEED_CMDS[@]}"; do
        command -v "${_NEED_CMDS[$i]}" >/dev/null 2>&1 ||
            MISSING_TOOLS+=("${_NEED_CMDS[$i]} (Debian package ${_NEED_PKGS[$i]})")
    done
    if [[ ${#MISSING_TOOLS[@]} -gt 0 ]]; then
        if is_ci; then
            die "required tool(s) missing and could not be installed: ${MISSING_TOOLS[*]}"
        fi
        warn "required tool(s) missing and could not be installed: ${MISSING_TOOLS[*]}"
        warn "tests that use them will fail; install with: sudo apt-get install ${pkgs[*]}"
    fi
}

# --- timed steps ------------------------------------------------------------

_STEP_NAMES=()
_STEP_SECS=()
_CURRENT_STEP=""

# step NAME CMD...: run CMD and record how long it took. CMD runs with `set -e` in force (step is
# never called in an `if`/`||` context, which would switch -e off inside shell functions), so any
# failing command inside it stops the script; the EXIT trap then names the failed step.
step() {
    local name="$1" start
    shift
    log "$name"
    _CURRENT_STEP="$name"
    start=$SECONDS
    "$@"
    _STEP_NAMES+=("$name")
    _STEP_SECS+=("$((SECONDS - start))")
    _CURRENT_STEP=""
}

step_summary() {
    local i
    printf '\n%-44s %6s\n' "step" "secs" >&2
    for i in "${!_STEP_NAMES[@]}"; do
        printf '%-44s %6s\n' "${_STEP_NAMES[$i]}" "${_STEP_SECS[$i]}" >&2
    done
}

_on_exit() {
    local rc=$?
    step_summary
    if [[ ${#MISSING_TOOLS[@]} -gt 0 ]]; then
        warn "these tools were missing: ${MISSING_TOOLS[*]}"
    fi
    if [[ $rc -ne 0 ]]; then
        printf '%sFAILED%s (exit code %d)%s\n' "$_R" "${_CURRENT_STEP:+: $_CURRENT_STEP}" "$rc" "$_N" >&2
    fi
    exit "$rc"
}

# steps_begin: call once, before the first step, to get the summary and failure report at exit.
steps_begin() { trap _on_exit EXIT; }
