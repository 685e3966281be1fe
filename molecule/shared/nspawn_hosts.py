#!/usr/bin/env python3
"""Throw-away Debian 12 hosts running real systemd, for the molecule scenarios.

Each host is a copy of a cached debootstrap root booted with systemd-nspawn inside its
own network namespace (veth pair, NAT to reach the package mirrors), in its own cgroup,
under a small supervisor that boots it again when the guest reboots (nspawn exit 133).

    nspawn_hosts.py create  --scenario NAME --subnet 10.213 --instance-config FILE HOST...
    nspawn_hosts.py destroy --scenario NAME [--host HOST]...
    nspawn_hosts.py status  --scenario NAME
    nspawn_hosts.py crash   --scenario NAME --host HOST...
    nspawn_hosts.py boot    --scenario NAME --host HOST...
    nspawn_hosts.py base

HOST is NAME[:INDEX]; host INDEX gets 10.213.INDEX.2 (the controller side is .1).
destroy kills everything in a host (no shutdown: its disk is deleted next); with --host only
those hosts of the scenario go (its other hosts keep running), and a
later create with the scenario's hosts boots them again from the pristine root, same
names and addresses (the restore rehearsal replaces the data host this way).
crash cuts the power: first every packet to and from the host is dropped (its network
namespace drops them, so nothing it had open gets a FIN, RST or ICMP, as when a machine dies),
then everything in it is killed (SIGKILL, no shutdown); its disk stays. boot starts it again
from that disk, with its network back, like pressing the power button.
State lives in /var/lib/chatd-molecule/<scenario>/, the pristine root and the shared
apt/pip download caches in /var/cache/chatd-molecule/.  Must run as root.
CHATD_MOLECULE_SLOT=N (N >= 1) runs a separate copy of a scenario beside others: names get
an "sN-" prefix and the subnet's second octet moves up by 2N.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("CHATD_MOLECULE_CACHE", "/var/cache/chatd-molecule"))
STATE = Path(os.environ.get("CHATD_MOLECULE_STATE", "/var/lib/chatd-molecule"))
BASE_ROOT = CACHE / "bookworm"
INCLUDE = "systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2,ca-certificates"
TAG = "chatd-molecule"
CGROUP_ROOTS = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]
MTU = "1400"
# Several checkouts may run the same scenarios at once: slot N (CHATD_MOLECULE_SLOT) gives
# them their own state directory, machine, namespace and cgroup names, and subnets.
SLOT = int(os.environ.get("CHATD_MOLECULE_SLOT", "0") or 0)
PFX = f"s{SLOT}-" if SLOT else ""


def log(msg: str) -> None:
    print(f"[nspawn-hosts] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


def mirror() -> str:
    """The machine's own Debian mirror, from its apt sources."""
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if "://" in p)
    raise SystemExit("no Debian mirror found in /etc/apt/sources*")


def ensure_base_root() -> None:
    """Debootstrap the pristine root once; later runs and scenarios reuse it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (BASE_ROOT / ".complete").exists():
            return
        tmp = CACHE / "bookworm.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"debootstrapping {BASE_ROOT} (once; about a minute)")
        start = time.monotonic()
        run("debootstrap", "--variant=minbase", f"--include={INCLUDE}", "bookworm",
            str(tmp), mirror(), stdout=subprocess.DEVNULL)
        chroot = ["chroot", str(tmp)]
        run(*chroot, "systemctl", "enable", "ssh")
        # Nothing in the pristine root may identify a host.
        run(*chroot, "apt-get", "clean")
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (tmp / "etc/machine-id").write_text("")
        with contextlib.suppress(FileNotFoundError):
            (tmp / "var/lib/dbus/machine-id").unlink()
        (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
        shutil.rmtree(BASE_ROOT, ignore_errors=True)
        tmp.rename(BASE_ROOT)
        (BASE_ROOT / ".complete").touch()
        log(f"base root ready in {time.monotonic() - start:.0f}s")


def host_paths(scenario: str, name: str) -> dict[str, Path]:
    sdir = STATE / scenario
    return {"root": sdir / "roots" / name, "pid": sdir / f"{name}.pid",
            "log": sdir / f"{name}.console.log", "dir": sdir}


def prepare_root(scenario: str, name: str, hosts: dict[str, int], subnet: str,
                 pubkey: str) -> Path:
    root = host_paths(scenario, name)["root"]
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    run("cp", "-a", str(BASE_ROOT), str(root))
    (root / ".complete").unlink(missing_ok=True)
    (root / "etc/hostname").write_text(f"{name}\n")
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {name}", "::1 localhost ip6-localhost"]
    lines += [f"{subnet}.{idx}.2 {other}" for other, idx in hosts.items()]
    (root / "etc/hosts").write_text("\n".join(lines) + "\n")
    (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    run("ssh-keygen", "-q", "-A", "-f", str(root), stdout=subprocess.DEVNULL)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    for src in Path("/etc/apt/sources.list.d").glob("*.sources"):
        shutil.copy(src, root / "etc/apt/sources.list.d" / src.name)
    if Path("/etc/apt/sources.list").exists():
        shutil.copy("/etc/apt/sources.list", root / "etc/apt/sources.list")
    # Trust the same local CAs as this machine (e.g. an egress proxy's), so the host
    # reaches PyPI exactly as the controller does.
    local_cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for ca in local_cas:
        shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
    if local_cas:
        run("chroot", str(root), "update-ca-certificates", stdout=subprocess.DEVNULL)
    # Seed apt's download cache with the packages earlier hosts fetched (hard links; apt
    # locks its archive directory, so it cannot be shared live between running hosts).
    archives = root / "var/cache/apt/archives"
    for deb in (CACHE / "apt-archives").glob("*.deb"):
        try:
            os.link(deb, archives / deb.name)
        except OSError:
            shutil.copy2(deb, archives / deb.name)
    return root


def harvest_debs(root: Path) -> None:
    """Keep the packages a host downloaded for the next hosts."""
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        target = CACHE / "apt-archives" / deb.name
        if not target.exists():
            shutil.copy2(deb, target)


def ipt(*rule: str, table: str = "filter", check_first: bool = True) -> None:
    """Add a tagged iptables rule unless it is already there."""
    spec = [*rule, "-m", "comment", "--comment", TAG]
    chain = spec[1]
    probe = run("iptables", "-t", table, "-C", chain, *spec[2:], check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode != 0 or not check_first:
        run("iptables", "-t", table, *spec)


def setup_network(scenario: str, name: str, idx: int, subnet: str) -> None:
    ns = f"cm-{PFX}{name}"
    veth = netns_veth(scenario, idx)
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", veth, "mtu", MTU, "type", "veth", "peer", "name", "eth0",
        "mtu", MTU, "netns", ns)
    run("ip", "addr", "add", f"{subnet}.{idx}.1/24", "dev", veth)
    run("ip", "link", "set", veth, "up")
    nsx = ["ip", "-n", ns]
    run(*nsx, "link", "set", "lo", "up")
    run(*nsx, "addr", "add", f"{subnet}.{idx}.2/24", "dev", "eth0")
    run(*nsx, "link", "set", "eth0", "up")
    run(*nsx, "route", "add", "default", "via", f"{subnet}.{idx}.1")
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    saved = STATE / "ip_forward.orig"
    if not saved.exists():
        saved.write_text(forward.read_text())
    forward.write_text("1\n")
    net = f"{subnet}.0.0/16"
    ipt("-I", "FORWARD", "-i", veth, "-j", "ACCEPT")
    ipt("-I", "FORWARD", "-o", veth, "-j", "ACCEPT")
    # Between test hosts: no NAT, so they see each other's real addresses.
    ipt("-A", "POSTROUTING", "-s", net, "-d", net, "-j", "RETURN", table="nat")
    ipt("-A", "POSTROUTING", "-s", net, "-j", "MASQUERADE", table="nat")


def netns_veth(scenario: str, idx: int) -> str:
    # Stable, short (<= 15 chars), distinct per scenario: cmv-<scenario>-<idx>.
    return f"cmv{scenario[:8]}{idx}"[:15]


def make_cgroups(name: str) -> None:
    for base in CGROUP_ROOTS:
        if base.is_dir():
            (base / TAG / f"{PFX}{name}").mkdir(parents=True, exist_ok=True)


def remove_cgroup_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def supervise(args: argparse.Namespace) -> None:
    """Run nspawn; boot again on exit 133 (guest reboot), stop on anything else."""
    for base in CGROUP_ROOTS:
        procs = base / TAG / f"{PFX}{args.name}" / "cgroup.procs"
        if procs.exists():
            procs.write_text(f"{os.getpid()}\n")
    paths = host_paths(args.scenario, args.name)
    cmd = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
           "-D", str(paths["root"]), f"--machine={PFX}{args.name}",
           f"--network-namespace-path=/run/netns/cm-{PFX}{args.name}",
           "--resolv-conf=off", "--timezone=off", "--link-journal=no",
           "--console=read-only", "--capability=CAP_NET_ADMIN",
           f"--bind={CACHE}/pip:/root/.cache/pip"]
    child: subprocess.Popen | None = None

    def forward(signum, _frame):
        if child and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    while True:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        rc = child.wait()
        print(f"[supervisor] nspawn exited {rc}", flush=True)
        if rc != 133:
            break
        time.sleep(0.5)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # defunct counts as gone


def wait_ssh(address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, 22), 1) as s:
            if s.recv(4).startswith(b"SSH"):
                return
        time.sleep(0.3)
    raise SystemExit(f"ssh on {address} did not answer in {timeout}s")


def start_host(scenario: str, name: str) -> None:
    paths = host_paths(scenario, name)
    make_cgroups(name)
    with open(paths["log"], "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "supervise", "--scenario", scenario, name],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    paths["pid"].write_text(f"{proc.pid}\n")


def create(args: argparse.Namespace) -> None:
    hosts: dict[str, int] = {}
    for i, spec in enumerate(args.hosts, start=1):
        name, _, idx = spec.partition(":")
        hosts[name] = int(idx or i)
    ensure_base_root()
    for sub in ("apt-archives", "pip"):
        (CACHE / sub).mkdir(parents=True, exist_ok=True)
    sdir = STATE / args.scenario
    sdir.mkdir(parents=True, exist_ok=True)
    key = sdir / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", TAG, "-f", str(key))
    pubkey = key.with_suffix(".pub").read_text()
    meta = {"subnet": args.subnet, "hosts": hosts}
    (sdir / "hosts.json").write_text(json.dumps(meta))
    config = []
    for name, idx in hosts.items():
        paths = host_paths(args.scenario, name)
        if paths["pid"].exists() and alive(int(paths["pid"].read_text())):
            log(f"{name} already running")
        else:
            prepare_root(args.scenario, name, hosts, args.subnet, pubkey)
            if not Path(f"/run/netns/cm-{PFX}{name}").exists():
                setup_network(args.scenario, name, idx, args.subnet)
            start_host(args.scenario, name)
        config.append({"instance": name, "address": f"{args.subnet}.{idx}.2", "user": "root",
                       "port": 22, "identity_file": str(key)})
    for entry in config:
        wait_ssh(entry["address"], 60)
        log(f"{entry['instance']} up at {entry['address']}")
    if args.instance_config:
        Path(args.instance_config).write_text(json.dumps(config, indent=2) + "\n")


def destroy(args: argparse.Namespace) -> None:
    sdir = STATE / args.scenario
    meta_file = sdir / "hosts.json"
    if not meta_file.exists():
        log(f"nothing to destroy for {args.scenario}")
        return
    meta = json.loads(meta_file.read_text())
    hosts = meta["hosts"]
    if args.host:
        unknown = set(args.host) - set(hosts)
        if unknown:
            raise SystemExit(f"{args.scenario} has no host {', '.join(sorted(unknown))}")
        hosts = {name: idx for name, idx in hosts.items() if name in args.host}
    # Thrown away, so no clean shutdown: everything in it is killed, as by a power cut (a
    # poweroff took 10-30 s per scenario, on CI's critical path, for a disk about to be deleted).
    for name, idx in hosts.items():
        pid_file = host_paths(args.scenario, name)["pid"]
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        kill_host(args.scenario, name, pid)
        veth = netns_veth(args.scenario, idx)
        run("ip", "link", "del", veth, check=False, stderr=subprocess.DEVNULL)
        run("ip", "netns", "del", f"cm-{PFX}{name}", check=False, stderr=subprocess.DEVNULL)
        root = host_paths(args.scenario, name)["root"]
        harvest_debs(root)
        shutil.rmtree(root, ignore_errors=True)
    remove_stale_locks()
    if args.host:
        remove_rules_if_unused()  # only the removed hosts' own rules: hosts.json stays
        log(f"destroyed {', '.join(hosts)} of {args.scenario}")
        return
    meta_file.unlink()
    remove_rules_if_unused()
    for base in CGROUP_ROOTS:
        with contextlib.suppress(OSError):
            (base / TAG).rmdir()
    log(f"destroyed {args.scenario}")


def kill_host(scenario: str, name: str, pid: int | None) -> None:
    """SIGKILL the host's supervisor, nspawn and everything in its namespace and cgroup, then
    remove what nspawn leaves behind (its root and network namespace stay)."""
    ns = f"cm-{PFX}{name}"
    if pid and alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for _ in range(2):  # a process forked while the first round ran
        if Path(f"/run/netns/{ns}").exists():
            out = run("ip", "netns", "pids", ns, check=False, capture_output=True).stdout
            for p in out.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), signal.SIGKILL)
        for base in CGROUP_ROOTS:
            procs = base / TAG / f"{PFX}{name}"
            for f in procs.rglob("cgroup.procs") if procs.is_dir() else []:
                for p in f.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(p), signal.SIGKILL)
        time.sleep(0.2)
    for base in CGROUP_ROOTS:
        remove_cgroup_tree(base / TAG / f"{PFX}{name}")
    root = host_paths(scenario, name)["root"]
    (root.parent / f".#{name}.lck").unlink(missing_ok=True)
    shutil.rmtree(f"/run/systemd/nspawn/propagate/{PFX}{name}", ignore_errors=True)
    host_paths(scenario, name)["pid"].unlink(missing_ok=True)


def remove_stale_locks() -> None:
    for lock in Path("/run/systemd/nspawn/locks").glob("inode-*"):
        holder = lock.read_text().strip() if lock.is_file() else ""
        if not holder.isdigit() or not alive(int(holder)):
            lock.unlink(missing_ok=True)


def scenario_hosts(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    meta_file = STATE / args.scenario / "hosts.json"
    if not meta_file.exists():
        raise SystemExit(f"{args.scenario} has no hosts")
    meta = json.loads(meta_file.read_text())
    unknown = set(args.host) - set(meta["hosts"])
    if unknown:
        raise SystemExit(f"{args.scenario} has no host {', '.join(sorted(unknown))}")
    return meta["subnet"], {name: idx for name, idx in meta["hosts"].items() if name in args.host}


def netns_drop(name: str, on: bool) -> None:
    """Drop (or stop dropping) every packet in and out of the host's network namespace."""
    ns = f"cm-{PFX}{name}"
    for chain in ("INPUT", "OUTPUT"):
        rule = [chain, "-m", "comment", "--comment", f"{TAG}-crash", "-j", "DROP"]
        present = run("ip", "netns", "exec", ns, "iptables", "-C", *rule, check=False,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if on and not present:
            run("ip", "netns", "exec", ns, "iptables", "-I", *rule)
        while not on and present:
            run("ip", "netns", "exec", ns, "iptables", "-D", *rule)
            present = run("ip", "netns", "exec", ns, "iptables", "-C", *rule, check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def crash(args: argparse.Namespace) -> None:
    """Power cut: silence the network first, then SIGKILL everything; the disk stays."""
    _, hosts = scenario_hosts(args)
    for name in hosts:
        pid_file = host_paths(args.scenario, name)["pid"]
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if not (pid and alive(pid)):
            raise SystemExit(f"{name} is not running")
        dropped_at = time.time()
        netns_drop(name, True)
        kill_host(args.scenario, name, pid)
        log(f"{name} crashed (network dropped, every process killed, disk kept)")
        print(json.dumps({"host": name, "network_dropped_at": dropped_at,
                          "killed_in_s": round(time.time() - dropped_at, 2)}), flush=True)
    remove_stale_locks()


def boot(args: argparse.Namespace) -> None:
    """Start crashed (or powered-off) hosts again from their own disks."""
    subnet, hosts = scenario_hosts(args)
    for name, idx in hosts.items():
        paths = host_paths(args.scenario, name)
        if paths["pid"].exists() and alive(int(paths["pid"].read_text())):
            raise SystemExit(f"{name} is running")
        if not paths["root"].is_dir():
            raise SystemExit(f"{name} has no disk (destroyed): use create")
        if Path(f"/run/netns/cm-{PFX}{name}").exists():
            netns_drop(name, False)
        else:
            setup_network(args.scenario, name, idx, subnet)
        start_host(args.scenario, name)
    for name, idx in hosts.items():
        wait_ssh(f"{subnet}.{idx}.2", 60)
        log(f"{name} booted at {subnet}.{idx}.2")


def remove_rules_if_unused() -> None:
    """Remove this tool's iptables rules once no scenario has hosts left."""
    others = list(STATE.glob("*/hosts.json"))
    for table in ("filter", "nat"):
        rules = run("iptables", "-t", table, "-S", capture_output=True).stdout.splitlines()
        for rule in rules:
            if f'--comment {TAG}' not in rule and f'--comment "{TAG}"' not in rule:
                continue
            parts = rule.split()
            if others and "-i" not in parts and "-o" not in parts:
                continue  # shared NAT rules still used by another scenario
            if ("-i" in parts or "-o" in parts):
                veth = parts[parts.index("-i" if "-i" in parts else "-o") + 1]
                if Path(f"/sys/class/net/{veth}").exists():
                    continue
            run("iptables", "-t", table, "-D", *parts[1:], check=False)
    saved = STATE / "ip_forward.orig"
    if not others and saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
        saved.unlink()


def status(args: argparse.Namespace) -> None:
    meta_file = STATE / args.scenario / "hosts.json"
    if not meta_file.exists():
        print(f"{args.scenario}: no hosts")
        return
    for name in json.loads(meta_file.read_text())["hosts"]:
        pid_file = host_paths(args.scenario, name)["pid"]
        up = pid_file.exists() and alive(int(pid_file.read_text()))
        print(f"{args.scenario}/{name}: {'running' if up else 'stopped'}")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("must run as root")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create")
    p.add_argument("--scenario", required=True)
    p.add_argument("--subnet", required=True, help="first two octets, e.g. 10.213")
    p.add_argument("--instance-config")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=create)
    for name, func in (("crash", crash), ("boot", boot)):
        p = sub.add_parser(name)
        p.add_argument("--scenario", required=True)
        p.add_argument("--host", action="append", required=True)
        p.set_defaults(func=func)
    for name, func in (("destroy", destroy), ("status", status)):
        p = sub.add_parser(name)
        p.add_argument("--scenario", required=True)
        p.set_defaults(func=func)
        if name == "destroy":
            p.add_argument("--host", action="append", help="only this host (repeatable)")
    # The pristine root alone (CI builds it while the rest is installed); create waits for it.
    sub.add_parser("base").set_defaults(func=lambda args: ensure_base_root())
    p = sub.add_parser("supervise")
    p.add_argument("--scenario", required=True)
    p.add_argument("name")
    p.set_defaults(func=supervise)
    args = parser.parse_args()
    if SLOT and hasattr(args, "scenario") and not args.scenario.startswith(PFX):
        args.scenario = PFX + args.scenario
        if args.cmd == "create":
            first, second = args.subnet.split(".")
            args.subnet = f"{first}.{int(second) + 2 * SLOT}"
    args.func(args)


if __name__ == "__main__":
    main()
