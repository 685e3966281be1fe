"""docs/benchmarks.md from a results file: method, targets, tables, plots (bench/results/plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import plots
from bench.headline import (
    DURABLE_P99_MS,
    FANOUT_P99_MS,
    durable_max,
    fanout_max,
    saturation,
)
from bench.report_baselines import db_ceiling, headlines, loadgen_ceiling
from bench.report_baselines import fmt as _fmt
from bench.report_baselines import pcts as _pcts
from bench.targets import targets

__all__ = ["targets", "write_docs"]

PLOTS = Path(__file__).resolve().parent / "results" / "plots"
CPU_GROUPS = ("workers", "nginx", "postgres", "redis", "loadgen")

METHOD = """\
Run it: `.venv/bin/python -m bench run --repeat 3` (full, three runs: this page and
`bench/results/full.json`), or `.venv/bin/python -m bench run --quick` (about 2 minutes, the CI
smoke test; no timing asserted), `--only durable,fanout` for some scenarios; `python -m bench
report` redraws this page.

How it measures:
- One command starts what it measures: chatd's own local stack (`chatd.devstack.Stack`:
  PostgreSQL, Redis, N chatd workers on unix sockets, nginx on 127.0.0.1, the production nginx
  site). Every setting in which it differs from production's defaults is in the table below,
  with its reason; Redis persists like production's (AOF, fsync every second).
- `--repeat N` runs every scenario N times in one invocation, interleaved (run 1 of each, then
  run 2, ...); headlines and targets use the medians, the spread is shown beside them.
- Load comes from separate load-generator processes (multiprocessing, each its own uvloop), never
  the event loop being measured. Load is **open loop**: each step has a fixed offered rate and
  a schedule; every payload carries its *scheduled* send time and latency is taken at the
  receiver from that time (send->ack at the sender, send->deliver at every other member), so a
  stalled sender shows up as latency (no coordinated omission). Percentiles are exact
  (sorted samples); p99.9 is shown as p999.
- CPU: utime+stime(+reaped children) from /proc for each process tree (each chatd worker,
  nginx master+workers, the postmaster and all backends, Redis, each load generator) over each
  step, reported as CPU-seconds per 1,000 deliveries (scenario 5: per 1,000 read marks or
  presence churn cycles).
- The box is small and shared: the load average is recorded with every step; judge numbers by
  it. Everything (load generators included) shares the same cores.
"""


CAVEATS = """\
Read the numbers with these in mind:
- Everything shares the box's cores: the load generators (Python, uvloop, picows; `websockets` with
  `--deflate`) too, and at times other work on the box (the `load` column is the 1-minute load
  average after each step). The load-generator ceiling says where the generators themselves stop.
- chatd acknowledges after the COMMIT and also sends the sender's own copy (not counted as a
  delivery); the relays (b), (c) store nothing and skip the sender. Concurrent sends share one
  statement and COMMIT (group commit; each ack still follows its COMMIT). The per-user send
  rate limit is lifted but still consulted (concurrent sends share one Redis round trip).
- PostgreSQL runs with `fsync = on` and `synchronous_commit = on`. On a VM a single WAL fsync
  now and then stalls; such a stall lands as a p99 spike in whichever step it hits, and under
  the headline rule it ends the headline there (a run's figure is then low; the median of
  several runs is what to read).
- Every headline (durable sends/s at p99 ack <= 50 ms, fan-out deliveries/s at p99 <= 100 ms) is the
  highest offered rate within the bound *with every lower step passing too*, for chatd and every
  peer alike (bench/headline.py). Fan-out "saturation" (p99 up to 2 s) is shown apart and is not a
  headline. A server that kept up at its ramp's top step is marked so: its maximum is higher, and a
  ratio against it is a bound. Groups of 2 are bounded by durable send capacity.
- Synapse runs as one process (its monolith), not as N workers.
- Clients do not negotiate permessage-deflate (`--deflate` turns it on).
"""


NOT_MET = """\
Why, from the profile at the end of this page ("Where chatd's worker CPU goes", taken at the
durable headline): chatd's cost is per message more than per delivery. Each send runs the
group-commit statement through asyncpg's execute path, frames and writes the ack and every copy,
and publishes once to Redis; each worker decodes what Redis delivers once per message. That
Python work, and the event loop's C level under it, is what the Node peer does in V8: in groups
of 10, where a message has few deliveries to spread it over, chatd falls furthest behind; in
groups of 100 the frame writer (one framing per event, one transport write per connection)
narrows the gap. The reconnect storm and idle rows are the first run's storm and idle scenarios
unless marked as medians; idle memory is measured after the earlier scenarios of the run grew
the workers."""


def _client(config: dict[str, Any]) -> str:
    client = config.get("load_generator_client")
    return f" ({client})" if client else ""


def _deviations(results: dict[str, Any]) -> list[str]:
    devs = results.get("config", {}).get("deviations")
    if devs is None:
        return ["Settings that differ from production: not recorded in this results file.", ""]
    out = [
        "Where the bench's stack differs from production's defaults (recorded in the results file:"
        " chatd's defaults from `chatd.config`, the others from the Ansible roles):",
        "",
        "| setting | bench | production default | why |",
        "|---|---|---|---|",
    ]
    for d in devs:
        out.append(f"| {d['setting']} | {d['bench']} | {_fmt(d['production'])} | {d['reason']} |")
    return [*out, ""]


def cpu_by_group(step: dict[str, Any], key: str = "cpu_s_per_1000_deliveries") -> dict[str, float]:
    per = step.get(key, {})
    out = dict.fromkeys(CPU_GROUPS, 0.0)
    for name, value in per.items():
        group = "workers" if name.startswith("worker-") or name == "synapse" else name.split("-")[0]
        if group in out:
            out[group] += value
    return {k: round(v, 3) for k, v in out.items()}


def _step_table(steps: list[dict[str, Any]], rate_label: str) -> list[str]:
    # chatd's durable steps: the mean messages per group-commit statement (from its metrics)
    batches = any("commit_batch_mean" in st for st in steps)
    lines = [
        f"| {rate_label} | acks/s | deliveries/s | ack p50 / p99 / p999 ms | deliver p50 / p99 / p999 ms"
        " | errors | CPU-s per 1k deliveries: workers / nginx / pg / redis / loadgen | load |"
        + (" messages per COMMIT, mean |" if batches else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if batches else ""),
    ]
    for st in steps:
        a, d, c = st["ack_ms"], st["deliver_ms"], cpu_by_group(st)
        lines.append(
            f"| {_fmt(round(st['offered_rate'], 1))} | {_fmt(st['ack_rate'])}"
            f" | {_fmt(st['deliveries_per_s'])}"
            f" | {_fmt(a['p50'])} / {_fmt(a['p99'])} / {_fmt(a['p999'])}"
            f" | {_fmt(d['p50'])} / {_fmt(d['p99'])} / {_fmt(d['p999'])} | {st['errors']}"
            f" | {' / '.join(_fmt(c[g]) for g in CPU_GROUPS)} | {st['loadavg_after'].split()[0]} |"
            + (f" {_fmt(st.get('commit_batch_mean'))} |" if batches else "")
        )
    return lines


def _fanout(label: str, data: dict[str, Any]) -> list[str]:
    by = data.get("by_group_size", {})
    if not by:
        return [f"{label}: {data.get('error', 'not run')}", ""]
    lines = [
        f"**{label}** ({data.get('members')} members connected)",
        "",
        f"| group size | groups | deliveries/s at p99 <= {FANOUT_P99_MS:g} ms, every lower step passing"
        " | at msgs/s | deliver p99 there, ms | saturation deliveries/s (p99 <= 2 s) | deliver p99 at"
        " saturation, ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in sorted(by, key=int):
        e = by[g]
        head, sat = fanout_max(e["steps"], int(g)), saturation(e["steps"], int(g))
        top = " (kept up at the top step)" if head["top"] else ""
        lines.append(
            f"| {g} | {e['groups']} | **{_fmt(head['rate'])}**{top} | {_fmt(round(head['msgs'], 1))}"
            f" | {_fmt(head['p99'])} | {_fmt(sat['deliveries_per_s'])} | {_fmt(sat['p99'])} |"
        )
    return [*lines, ""]


def _durable_line(steps: list[dict[str, Any]]) -> str:
    head = durable_max(steps)
    top = " (kept up at the top step: the maximum is higher)" if head["top"] else ""
    sat = max((st["ack_rate"] for st in steps), default=0)
    return (
        f"Headline, the highest offered rate with p99 ack <= {DURABLE_P99_MS:g} ms and every lower step"
        f" passing: **{_fmt(head['rate'])}/s**{top} (p99 {_fmt(head['p99'])} ms). Saturation (the most"
        f" acks/s seen at any step, whatever the p99; not a headline): {_fmt(sat)}/s."
    )


def write_docs(results: dict[str, Any], path: Path) -> None:
    PLOTS.mkdir(parents=True, exist_ok=True)
    s = results["scenarios"]
    m = results["machine"]
    rel = Path("..") / "bench" / "results" / "plots"
    out = [
        "# chatd benchmarks",
        "",
        f"Run `{results['name']}` ({results['mode']}), {results['started']}, {results['wall_s']} s."
        f" Machine: {m['cpus']} cores, {m['mem_gib']} GiB, {m['platform']}, Python {m['python']}."
        f" Load average at start `{m['loadavg_at_start']}`, at end `{m.get('loadavg_at_end', '')}`."
        f" chatd workers: {results['config']['workers']};"
        f" load generators: {results['config']['load_generators']}"
        f"{_client(results['config'])};"
        f" permessage-deflate: {'on' if results['config']['deflate'] else 'off'}.",
        "",
        *[
            f"Re-run and merged: {', '.join(r['scenarios'])} at {r['started']} (load at start"
            f" `{r['loadavg_at_start']}`); each target's ratio compares numbers from one run.\n"
            for r in results.get("reruns", [])
        ],
        "## Targets (issues 6 and 23), measured in this invocation",
        "",
        "| target | measured | ratio | met |",
        "|---|---|---|---|",
    ]
    for row in results.get("targets") or targets(results):
        met = "-" if row["met"] is None else ("met" if row["met"] else "**not met**")
        out.append(f"| {row['target']} | {row['measured']} | {_fmt(row['ratio'])} | {met} |")
    missed = [row["target"] for row in results.get("targets") or targets(results) if row["met"] is False]
    if missed:
        out += ["", f"Not met: {len(missed)} targets. {NOT_MET}"]
    out += headlines(results)
    out += ["", "## Method", "", METHOD, *_deviations(results), CAVEATS]
    ceiling = s.get("db-ceiling", {})
    out += ["## 1. Durable sends, 1:1 conversations", ""]
    out += db_ceiling(ceiling)
    dur = s.get("durable", {})
    if "steps" in dur:
        out += [
            f"chatd, {dur['pairs']} pairs (each pair's receiver connected). {_durable_line(dur['steps'])}",
            "",
        ]
        out += _step_table(dur["steps"], "offered sends/s")
        out.append("")
    out += _node_durable(s.get("node-durable", {}))
    if plots.latency_vs_rate(results, PLOTS / "latency_vs_rate.png"):
        out += [f"![latency against offered rate]({rel / 'latency_vs_rate.png'})", ""]
    out += [
        "## 2. Fan-out by group size, against relays",
        "",
        "The same members (recipients spread over workers by nginx) are split into groups of each"
        " size; each group's first member sends. Offered load is set in deliveries/s and raised until"
        " deliveries fall behind (under 95 % delivered within 3 s of the step, under 90 % of the offered"
        " rate, or p99 over 2 s). The relays (b) and (c) store nothing and are driven identically"
        " (Socket.IO rooms, ack after the emit), behind the same kind of nginx, with as many worker"
        " processes as chatd, on the same Redis.",
        "",
    ]
    for data, label in (
        (s.get("fanout", {}), "chatd"),
        (s.get("node-durable", {}).get("fanout", {}), "(e) Node.js like-for-like durable peer"),
        (s.get("sio-python", {}), "(b) python-socketio + AsyncRedisManager, uvicorn"),
        (s.get("sio-node", {}), "(c) Node.js Socket.IO + @socket.io/redis-adapter"),
    ):
        out += _fanout(label, data)
    out += loadgen_ceiling(s.get("loadgen-ceiling", {}), results)
    half = s.get("fanout", {}).get("by_group_size", {}).get("10", {}).get("half_max_rate")
    if half:
        out += [
            f"Groups of 10 at half of chatd's saturation rate ({_fmt(round(half['offered_rate'], 1))} msg/s):"
            f" deliver p50/p99/p999 {half['deliver_ms']['p50']} / {half['deliver_ms']['p99']}"
            f" / {half['deliver_ms']['p999']} ms.",
            "",
        ]
    if plots.deliveries_vs_group(results, PLOTS / "deliveries_vs_group.png"):
        out += [f"![deliveries/s against group size]({rel / 'deliveries_vs_group.png'})", ""]
    if plots.fanout_latency(results, PLOTS / "fanout_latency.png"):
        out += [f"![fan-out latency]({rel / 'fanout_latency.png'})", ""]
    fan = s.get("fanout", {}).get("by_group_size", {})
    for g in sorted(fan, key=int):
        out += [
            f"<details><summary>chatd steps, groups of {g}</summary>",
            "",
            *_step_table(fan[g]["steps"], "offered msgs/s"),
            "",
            "</details>",
            "",
        ]
    out += _durable_peer(s.get("synapse", {}))
    out += _idle(s.get("idle", {}))
    out += _storm(s.get("storm", {}))
    out += _presence(s.get("presence", {}))
    # generated from profile.json by `bench profile` (the hand-written notes.md is not included:
    # every figure on this page comes from a results file)
    for extra in ("profile.md",):
        more = path.parent.parent / "bench" / "results" / extra
        if more.exists():
            out += [more.read_text()]
    path.write_text("\n".join(out) + "\n")


def _node_durable(peer: dict[str, Any]) -> list[str]:
    out = ["### Peer (e): the same write path in Node.js", ""]
    dur = peer.get("durable", {})
    if "steps" not in dur:
        return [*out, f"Not measured: {peer.get('error', 'not run')}", ""]
    v = peer.get("versions", {})
    out += [
        f"Node.js {v.get('node', '?')}, ws {v.get('ws', '?')}, pg {v.get('pg', '?')}, ioredis"
        f" {v.get('ioredis', '?')} (bench/peers/durable_server.js): chatd's schema and promises, group"
        f" commit, as many processes as chatd behind the same kind of nginx. {_durable_line(dur['steps'])}",
        "",
    ]
    return [*out, *_step_table(dur["steps"], "offered sends/s"), ""]


def _durable_peer(syn: dict[str, Any]) -> list[str]:
    out = ["## Durable peer (d): Matrix Synapse", ""]
    if "steps" not in syn:
        return [*out, f"Not measured: {syn.get('error', 'not run')}", ""]
    out += [
        f"Synapse {syn['versions'].get('matrix-synapse', '?')}, one process (monolith), on the same"
        f" PostgreSQL; {syn['pairs']} 1:1 rooms; PUT send (200 = persisted), /sync long-poll receive."
        f" Highest offered rate with p99 ack <= 1 s and every lower step passing:"
        f" **{syn['max_sustained_rate']}/s** (p99 ack {syn['p99_ack_ms_at_max']} ms).",
        "",
    ]
    return [*out, *_step_table(syn["steps"], "offered sends/s"), ""]


def _idle(idle: dict[str, Any]) -> list[str]:
    out = ["## 3. Idle connections", ""]
    if "held" not in idle:
        return [*out, f"Not measured: {idle.get('error', 'not run')}", ""]
    out += [
        f"Target {idle['target']} connections ({idle['users']} users, several devices each), opened in"
        f" batches: **{idle['held']} held**. RSS per connection: chatd workers"
        f" **{idle['worker_rss_per_connection_kb']} KB** (growth from the first to the last batch;"
        f" before/after: {idle.get('worker_rss_per_connection_kb_before_after')} KB),"
        f" nginx {idle['nginx_rss_per_connection_kb']} KB,"
        f" load generator {idle['loadgen_rss_per_connection_kb']} KB.",
        "",
        "| connections | workers RSS MiB | worker fds | nginx RSS MiB | batch s | failed | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in idle["batches"]:
        out.append(
            f"| {b['connections']} | {b['workers_rss'] / 2**20:.0f} | {b['workers_fds']}"
            f" | {b['nginx_rss'] / 2**20:.0f} | {b['seconds']} | {b['failed']} | {b['loadavg'].split()[0]} |"
        )
    return [*out, ""]


def _storm(st: dict[str, Any]) -> list[str]:
    out = ["## 4. Reconnect storm", ""]
    if "clients" not in st:
        return [*out, f"Not measured: {st.get('error', 'not run')}", ""]
    c = st["caught_up_after_drop_s"]
    out += [
        f"{st['clients']} clients ({st['users']} users x devices, {st['groups']} groups) while"
        f" {st['rate_msgs_per_s']} msg/s flow; all dropped at once (TCP reset), each reconnects after"
        f" uniform(0, {st['jitter_s']}) s with its `since` map. **{st['reconnected']}/{st['dropped']}**"
        f" caught up (synced); the last **{st['all_caught_up_s']} s** after the drop (p50"
        f" {_fmt(c['p50'])} ms, p99 {_fmt(c['p99'])} ms); {st['attempts']} attempts; missing"
        f" **{st['missing']}**, duplicates **{st['duplicates']}** over {st['messages_acked']} messages."
        f" Load `{st['loadavg_after']}`.",
        "",
    ]
    return out


def _presence(pr: dict[str, Any]) -> list[str]:
    out = ["## 5. Read marks and presence churn", ""]
    if "reads" not in pr:
        return [*out, f"Not measured: {pr.get('error', pr.get('skipped', 'not run'))}", ""]
    conf = pr["settings"]
    cpu_head = "CPU-s per 1k {}: workers / nginx / pg / redis / loadgen"
    out += [
        f"{pr['groups']} groups of {pr['members']} members, all connected (the sender with one device per"
        f" load generator), {pr['messages_per_group']} messages in each. **Read marks**: the other members"
        " send `read` frames at the offered rate, round-robin, each moving a pointer one seq on. `read_state`"
        " is send -> reply at the marking socket; `receipt` is send -> the first `receipts` event at a"
        " sender's device that counts the mark. Receipts are coalesced by the server: one event per group"
        f" per `CHATD_RECEIPT_PUSH_INTERVAL_MS` = {_fmt(conf['CHATD_RECEIPT_PUSH_INTERVAL_MS'])} ms, so"
        " that latency is up to one interval by design (about half of it on average).",
        "",
        f"| offered marks/s | acks/s | read_state p50 / p99 / p999 ms | receipt p50 / p99 / p999 ms"
        f" | receipts missing | errors | {cpu_head.format('marks')} | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in pr["reads"]:
        c = cpu_by_group(st, "cpu_s_per_1000_ops")
        out.append(
            f"| {_fmt(st['offered_rate'])} | {_fmt(st['ack_rate'])} | {_pcts(st['read_ack_ms'])}"
            f" | {_pcts(st['receipt_ms'])} | {st['receipts_missing']} | {st['errors']}"
            f" | {' / '.join(_fmt(c[g]) for g in CPU_GROUPS)} | {st['loadavg_after'].split()[0]} |"
        )
    out += [
        "",
        "**Presence churn**: users who share a group with those members connect at the offered rate"
        " (each user once), send `presence` `idle` half-way through their stay, and close cleanly after"
        f" {_fmt(pr['churn'][0]['hold_s'] if pr['churn'] else None)} s; every group member watches."
        " `online` is scheduled connect -> a member sees the event (WebSocket handshake and `auth`"
        " included), `away` scheduled idle -> event, `offline` scheduled close -> event, which the"
        f" server holds back for `CHATD_PRESENCE_GRACE_S` = {_fmt(conf['CHATD_PRESENCE_GRACE_S'])} s"
        f" and sends at its next sweep (`CHATD_PRESENCE_SWEEP_S` = {_fmt(conf['CHATD_PRESENCE_SWEEP_S'])} s):"
        f" expect {_fmt(conf['CHATD_PRESENCE_GRACE_S'])}-"
        f"{_fmt(conf['CHATD_PRESENCE_GRACE_S'] + conf['CHATD_PRESENCE_SWEEP_S'])} s. (A connection lost"
        f" without a close is noticed by the ping timeout instead: `CHATD_PRESENCE_HEARTBEAT_S` ="
        f" {_fmt(conf['CHATD_PRESENCE_HEARTBEAT_S'])} s, `CHATD_PRESENCE_TTL_S` ="
        f" {_fmt(conf['CHATD_PRESENCE_TTL_S'])} s; not measured.) Events seen / expected per status.",
        "",
        "| connects/s | connected | connect->synced p50 / p99 ms | online p50 / p99 / p999 ms"
        " | away p50 / p99 / p999 ms | offline p50 / p99 / max ms | events seen"
        f" | {cpu_head.format('churn cycles')} | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for st in pr["churn"]:
        c = cpu_by_group(st, "cpu_s_per_1000_ops")
        off, seen = st["offline_ms"], [st[f"{k}_ms"]["n"] for k in ("online", "away", "offline")]
        out.append(
            f"| {_fmt(st['offered_rate'])} | {st['connected']}/{st['churners']}"
            f" | {_fmt(st['connect_ms']['p50'])} / {_fmt(st['connect_ms']['p99'])}"
            f" | {_pcts(st['online_ms'])} | {_pcts(st['away_ms'])}"
            f" | {_fmt(off['p50'])} / {_fmt(off['p99'])} / {_fmt(off['max'])}"
            f" | {'/'.join(map(str, seen))} of {st['expected_events_per_status']} each"
            f" | {' / '.join(_fmt(c[g]) for g in CPU_GROUPS)} | {st['loadavg_after'].split()[0]} |"
        )
    return [*out, ""]
