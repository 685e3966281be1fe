"""Process accounting from /proc: CPU seconds of a process tree, RSS, machine load."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the live tree of `root`, reaped children included."""
    user = system = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user / TICK, system / TICK


def cpu_seconds(root: int, include_tree: bool = True) -> float:
    """utime+stime (+cutime+cstime: reaped children) summed over the live tree of `root`.

    A reaped process's time sits in its parent's cutime/cstime, so summing all four fields
    over the live processes counts every process of the tree, living or gone, exactly once.
    """
    total = 0
    for pid in tree(root) if include_tree else [root]:
        fields = _stat(pid)
        if fields is not None:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / TICK


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


class CpuMeter:
    """CPU seconds per named process tree between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self.load_before = ""
        self.load_after = ""
        self._split: dict[str, tuple[float, float]] = {}
        self.system_s: dict[str, float] = {}

    def start(self) -> None:
        self.load_before = loadavg()
        self._split = {name: cpu_split(pid) for name, pid in self.pids.items()}
        self._start = {name: sum(split) for name, split in self._split.items()}

    def stop(self) -> dict[str, float]:
        self.load_after = loadavg()
        split = {name: cpu_split(pid) for name, pid in self.pids.items()}
        self.system_s = {
            name: round(s[1] - self._split.get(name, (0.0, 0.0))[1], 3) for name, s in split.items()
        }
        return {name: round(sum(s) - self._start.get(name, 0.0), 3) for name, s in split.items()}


def per_thousand(cpu: dict[str, float], deliveries: int) -> dict[str, float]:
    if deliveries <= 0:
        return {}
    return {name: round(seconds * 1000 / deliveries, 4) for name, seconds in cpu.items()}
