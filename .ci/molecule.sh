#!/usr/bin/env bash
# Deployment checks: lint, syntax, then both molecule scenarios on real systemd hosts
# (debootstrap + systemd-nspawn, see molecule/shared/nspawn_hosts.py). Needs root.
# Uses the virtualenv at $VENV (default .venv) with the `deploy` extra installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$(cd "$VENV" && pwd)/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_NOCOLOR=1

need=()
for cmd in debootstrap systemd-nspawn iptables ip ssh; do
  command -v "$cmd" >/dev/null || need+=("$cmd")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap systemd-container iptables iproute2 openssh-client >/dev/null
fi

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

# The roles use community.postgresql and community.crypto, bundled by the `ansible` package
# (the deploy extra); fail here with a clear line rather than deep inside a converge.
step "collections"
for collection in community.postgresql community.crypto; do
  ansible-galaxy collection list "$collection" 2>/dev/null | grep -q "^$collection " \
    || { echo "missing Ansible collection $collection: pip install -e '.[deploy]'" >&2; exit 1; }
done
# Leave no hosts behind, whatever happens.
cleanup() {
  for s in default multi; do python3 molecule/shared/nspawn_hosts.py destroy --scenario "$s" || true; done
}
trap cleanup EXIT

# Each task's start time and duration in the logs, and the slowest tasks at the end of each
# run (ansible.posix.profile_tasks): where CI's minutes go.
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks

# Both scenarios at once: their hosts, networks and state are apart (names, subnets), and most
# of their time is spent waiting (package installs, restarts, timers, failovers), so the step
# takes about as long as multi alone. Each one's output is printed whole when it ends.
logs=$(mktemp -d)
declare -A pids
for scenario in default multi; do
  step "molecule test -s $scenario (started)"
  (
    started=$SECONDS
    rc=0
    # default at a lower priority (it and its host): multi is CI's critical path, and default
    # has half an hour of slack beside it.
    niceness=0
    [[ $scenario == default ]] && niceness=10
    nice -n "$niceness" molecule test -s "$scenario" >"$logs/$scenario.log" 2>&1 || rc=$?
    echo "== molecule test -s $scenario: exit $rc after $((SECONDS - started)) s" >>"$logs/$scenario.log"
    exit "$rc"
  ) &
  pids[$scenario]=$!
done

# The lints while the scenarios run (they took 90 s in a row before them, on CI's critical
# path: multi is its longest step), at a lower priority (beside the tests and both scenarios
# they ran 210 s during multi's converge); a failure fails the run once the scenarios end.
failed=()
lint() {
  step "yamllint" && nice -n 10 yamllint . \
    && step "ansible-lint (production profile)" && nice -n 10 ansible-lint \
    && step "syntax check" \
    && for pb in ansible/playbooks/*.yml; do
      nice -n 10 ansible-playbook -i inventory.example --syntax-check "$pb" || return 1
    done
}
lint || failed+=("lint")
for scenario in default multi; do
  wait "${pids[$scenario]}" || failed+=("$scenario")
  step "molecule test -s $scenario (ended)"
  cat "$logs/$scenario.log"
done
rm -rf "$logs"
if ((${#failed[@]})); then
  echo "molecule failed: ${failed[*]}" >&2
  exit 1
fi
step "done"
