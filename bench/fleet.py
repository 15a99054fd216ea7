#!/usr/bin/env python3
"""Fleet benchmark: N simulated devices (separate install roots, one process per deployment) take a
release from a loopback OCI registry, install it, health-check it and report over MQTT.

Everything is real and on 127.0.0.1: Debian's docker-registry, a central mosquitto (persistence on)
and a site-local mosquitto bridged to it with the config `edgesdk.fleet.broker` writes; the
PP-OCR direction classifier as the model; lines of text from scikit-image's `page` photo as live
frames. Each device starts on 1.0.0.

 1. Good release 1.1.0 by a rollout spec: the canary cohort (10 %, at least 2) shadow-runs it
    beside 1.0.0 (`canary_install`, top-1 agreement), then the rest install it (health check).
    Each device then publishes --results results (QoS 1) and a report. The central broker is
    restarted (SIGTERM, persistence) while the second cohort reports.
    Figures: time until all devices are healthy (from the first deployment to the last healthy
    report at the central broker), bytes moved (package bytes pulled, MQTT payload received),
    results lost (expected - received at the central broker; target 0).
 2. Bad release 2.0.0: the class-swapped model packed with a health sample of its own, so its
    health check passes; the canary must roll it back on 100 % of the canary cohort and the
    rollout must halt: 0 devices beyond the cohort reached (their roots never saw 2.0.0).

Prints PASS/FAIL per target (exit 1 if one fails) and writes --markdown (default out/bench_fleet.md).

    python bench/fleet.py [--devices 50] [--parallel 4] [--results 20]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]
REPO = "edge/ppocr-cls"


# ----------------------------------------------------------------------------- one device
def device_main(job: dict) -> int:
    """One deployment on one simulated device: pull, (canary-)install, report over MQTT."""
    from edgesdk.errors import EdgeSDKError
    from edgesdk.fleet import oci
    from edgesdk.fleet.canary import CanaryPolicy, canary_install
    from edgesdk.provision.install import install, status

    quiet = lambda _m: None  # noqa: E731
    out: dict[str, Any] = {"device": job["id"], "bytes": 0, "healthy": False, "decision": "", "error": ""}
    try:
        t = oci.pull(job["ref"], Path(job["root"]) / "downloads" / "oci", plain_http=True, progress=quiet)
        out["bytes"] = t.bytes_moved
        if job.get("canary"):
            r = canary_install(t.path, job["root"], job["frames"], CanaryPolicy(**job["canary"]),
                               trusted_keys=job["trusted"], progress=quiet)
            out.update(decision=r.decision, agreement=r.agreement)
        else:
            install(t.path, job["root"], trusted_keys=job["trusted"], progress=quiet)
            out["decision"] = "install"
        t.path.unlink(missing_ok=True)
    except EdgeSDKError as exc:
        out["error"] = str(exc)[:300]
    st = status(job["root"], verify=False, progress=quiet)
    out["version"] = (st["current"] or {}).get("version")
    out["healthy"] = bool(st["ok"]) and out["decision"] in ("install", "commit")
    try:
        _publish(job, st, out)
    except EdgeSDKError as exc:  # the report cannot go out: the controller counts this device as silent
        out["error"] = f"report not sent: {exc}"[:300]
    print(json.dumps(out), flush=True)
    return 0 if out["healthy"] else 1


def _publish(job: dict, st: dict, out: dict) -> None:
    """`results` predictions of the running release, then the report, QoS 1 to the site broker."""
    from edgesdk.predictor import Predictor
    from edgesdk.results import Result
    from edgesdk.sinks.mqtt import MqttSink
    from edgesdk.streaming.sources import make_source

    sink = MqttSink("127.0.0.1", job["mqtt_port"], f"edgesdk/fleet/{job['id']}/results", client_id=f"dev-{job['id']}",
                    wait=10, close_timeout=60)
    src = make_source(job["frames"])
    bundle = Path(st["current"]["path"]) / "bundle"
    with sink, Predictor(bundle) as p:
        src.open()
        for i in range(job["results"]):
            image = src.read()
            if image is None:
                src.rewind()
                image = src.read()
            r = p.predict(image)[0]
            r.source_id, r.frame_index = job["id"], job["seq"] * 10000 + i
            sink.write(None, r)
        src.close()
        sink.write(None, Result(source_id=job["id"], frame_index=-1, meta={
            "kind": "report", "seq": job["seq"], "healthy": out["healthy"], "version": out["version"] or "",
            "decision": out["decision"], "bytes": out["bytes"]}))


# ----------------------------------------------------------------------------- the controller
class Fleet:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from mqttbroker import MosquittoBroker, Subscriber, free_port
        from ociregistry import DockerRegistry

        from edgesdk.fleet.broker import Uplink, write_local_broker_config

        self.args, self.tmp = args, tmp
        self.registry = DockerRegistry(tmp / "registry").start()
        self.central = MosquittoBroker(workdir=tmp / "central", persistence=True).start()
        site_port, conf = free_port(), tmp / "site" / "mosquitto.conf"
        write_local_broker_config(conf, Uplink("127.0.0.1", self.central.port, tls=False), "site1",
                                  tmp / "site" / "db", listen_port=site_port, run_as="root" if os.geteuid() == 0 else None)
        self.site = MosquittoBroker(port=site_port, workdir=tmp / "site", config=conf.read_text()).start()
        self.sub = Subscriber(self.central.port, "edgesdk/fleet/#", client_id="fleet-controller",
                              key_field="frame_index")
        self.devices = [f"dev-{i:03d}" for i in range(args.devices)]
        self.roots = {d: tmp / "devices" / d for d in self.devices}
        self.seq = 0

    def close(self) -> None:
        self.sub.close()
        for b in (self.site, self.central):
            b.close()
        self.registry.stop()

    def reports(self, seq: int) -> dict[str, dict]:
        with self.sub.cond:
            return {m["source_id"]: m["meta"] for m in self.sub.messages
                    if m.get("meta", {}).get("kind") == "report" and m["meta"].get("seq") == seq}

    def results_received(self, seq: int) -> set:
        lo, hi = seq * 10000, seq * 10000 + 10000
        with self.sub.cond:
            return {(m["source_id"], m["frame_index"]) for m in self.sub.messages if lo <= m["frame_index"] < hi}

    def deploy(self, devices: list[str], ref: str, canary: Optional[dict], on_done=None) -> list[dict]:
        """Run one deployment process per device, --parallel at a time; their stdout reports."""
        frames = str(self.tmp / "frames")
        jobs = [{"id": d, "root": str(self.roots[d]), "ref": ref, "trusted": str(self.trusted), "frames": frames,
                 "canary": canary, "mqtt_port": self.site.port, "results": self.args.results, "seq": self.seq}
                for d in devices]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        pending, running, outs, t0 = list(jobs), [], [], time.monotonic()
        while pending or running:
            while pending and len(running) < self.args.parallel:
                running.append(subprocess.Popen([sys.executable, __file__, "device", json.dumps(pending.pop(0))],
                                                env=env, stdout=subprocess.PIPE, text=True))
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                lines = (p.stdout.read() or "").strip().splitlines()
                outs.append(json.loads(lines[-1]) if lines else {"healthy": False, "error": f"exit {p.returncode}"})
                if on_done:
                    on_done(len(outs))
                if len(outs) % 10 == 0:
                    eta = (time.monotonic() - t0) / len(outs) * (len(jobs) - len(outs))
                    print(f"  {len(outs)}/{len(jobs)} deployments done, ETA {eta:.0f} s", file=sys.stderr, flush=True)
            time.sleep(0.05)
        return outs

    # ------------------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Packages (1.0.0, good 1.1.0, bad-but-healthy 2.0.0) in the registry, frames, devices on 1.0.0."""
        from provisiondata import Artifacts
        from sampledata import text_line_frames

        from edgesdk.fleet import oci
        from edgesdk.provision.install import install
        from edgesdk.provision.package import pack
        from edgesdk.fleet.registry import Registry

        art = Artifacts(self.tmp / "art", ROOT / ".cache" / "models" / "ppocr_cls.onnx")
        self.trusted = art.trusted
        bad = pack(art.wrong_bundle, self.tmp / "art" / "cls-2.0.0.edgepkg", "2.0.0", key=art.signer.private_path,
                   sample=art.sample).path
        reg = Registry(self.registry.host, plain_http=True)
        self.refs = {v: oci.push(pkg, f"oci://{self.registry.host}/{REPO}:{v}", reg).ref
                     for v, pkg in (("1.1.0", art.pkgs["1.1.0"]), ("2.0.0", bad))}
        frames = text_line_frames(self.tmp / "frames")
        for d in self.devices:
            install(art.pkgs["1.0.0"], self.roots[d], trusted_keys=art.trusted, progress=lambda _m: None)

    # ------------------------------------------------------------------------- rollouts
    def rollout(self, version: str, restart_central: bool) -> dict:
        from edgesdk.fleet.rollout import Rollout, parse_rollout

        self.seq += 1
        n_canary = max(2, len(self.devices) // 10)
        spec = parse_rollout({"release": self.refs[version], "timeout_s": 900,
                              "canary": {"frames": 24, "seconds": 60, "threshold": 0.95, "min_frames": 20},
                              "cohorts": [{"name": "canary", "devices": self.devices[:n_canary]},
                                          {"name": "fleet", "devices": self.devices[n_canary:]}]})
        ro = Rollout(spec)
        t0, outs, restarted = time.monotonic(), [], {"at": None}
        while ro.targets():
            cohort = ro.targets()
            canary = vars(spec.canary) if ro.is_canary else None
            hook = self._restart_hook(len(cohort), restarted) if restart_central and not ro.is_canary else None
            outs += self.deploy(cohort, spec.release, canary, hook)
            self._await_reports(set(cohort), timeout=120)
            for dev, rep in self.reports(self.seq).items():
                ro.record(dev, bool(rep.get("healthy")))
            step = ro.advance()
            print(f"  cohort {ro.history[-1]['cohort']}: {ro.history[-1]['healthy']}/{ro.history[-1]['devices']} "
                  f"healthy -> {step}", file=sys.stderr, flush=True)
        return {"rollout": ro, "outs": outs, "seconds": self._last_healthy(t0), "restarted_at": restarted["at"]}

    def _restart_hook(self, n: int, restarted: dict):
        def hook(done: int) -> None:
            if restarted["at"] is None and done >= n // 2:
                restarted["at"] = done
                print(f"  restarting the central broker after {done}/{n} deployments", file=sys.stderr, flush=True)
                self.central.stop()
                time.sleep(1.0)
                self.central.start()
        return hook

    def _await_reports(self, devices: set, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not devices <= set(self.reports(self.seq)):
            time.sleep(0.1)

    def _last_healthy(self, t0: float) -> float:
        return time.monotonic() - t0  # reports are awaited before each cohort ends: the last one is now

    def versions(self) -> dict[str, str]:
        from edgesdk.provision.install import status
        return {d: status(self.roots[d], verify=False, progress=lambda _m: None)["current"]["version"]
                for d in self.devices}

    def saw(self, device: str, version: str) -> bool:
        """Whether a device's root ever held `version` (its history and its releases)."""
        root = self.roots[device]
        history = (root / "history.jsonl").read_text() if (root / "history.jsonl").exists() else ""
        return version in history or any(p.name.startswith(version) for p in (root / "releases").iterdir())


# ----------------------------------------------------------------------------- figures
def figures(fleet: Fleet, good: dict, bad: dict) -> tuple[list[tuple[str, str]], list[tuple[str, bool]]]:
    n = len(fleet.devices)
    good_outs = good["outs"]
    expected = {(d, 1 * 10000 + i) for d in fleet.devices for i in range(fleet.args.results)}
    received = fleet.results_received(1)
    lost = len(expected - received)
    versions = fleet.versions()
    canary_cohort = bad["rollout"].spec.cohorts[0].devices
    beyond = [d for d in fleet.devices if d not in canary_cohort]
    rolled_back = [o for o in bad["outs"] if o.get("decision") == "rollback"]
    reached_beyond = [d for d in beyond if fleet.saw(d, "2.0.0")]
    pulled = sum(o.get("bytes", 0) for o in good_outs + bad["outs"])
    with fleet.sub.cond:
        mqtt_bytes = sum(len(json.dumps(m)) for m in fleet.sub.messages)
    rows = [("devices", str(n)), ("canary cohort", str(len(canary_cohort))),
            ("time until all healthy (1.1.0)", f"{good['seconds']:.1f} s"),
            ("healthy after 1.1.0", f"{sum(o['healthy'] for o in good_outs)}/{n}"),
            ("package bytes pulled (both rollouts)", f"{pulled} ({pulled / max(len(good_outs + bad['outs']), 1):.0f} per deployment)"),
            ("MQTT payload bytes at the central broker", str(mqtt_bytes)),
            ("central broker restarted after", f"{good['restarted_at']} deployments of the fleet cohort"),
            ("results expected / received / lost", f"{len(expected)} / {len(expected & received)} / {lost}"),
            ("2.0.0 canary decisions", ", ".join(sorted({o.get('decision') or o.get('error', '?')[:40] for o in bad['outs']}))),
            ("2.0.0 rolled back in the canary cohort", f"{len(rolled_back)}/{len(canary_cohort)}"),
            ("2.0.0 rollout state", bad["rollout"].state),
            ("devices beyond the cohort that saw 2.0.0", str(len(reached_beyond)))]
    checks = [("every device healthy on 1.1.0", all(v == "1.1.0" for v in versions.values())),
              ("0 results lost across the central broker restart", lost == 0 and good["restarted_at"] is not None),
              ("bad release rolled back on 100% of the canary cohort", len(rolled_back) == len(canary_cohort)),
              ("bad release reached 0 devices beyond the canary cohort",
               not reached_beyond and bad["rollout"].state == "halted")]
    return rows, checks


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=50, help="simulated devices (default 50)")
    ap.add_argument("--parallel", type=int, default=4, help="deployments running at once (default 4)")
    ap.add_argument("--results", type=int, default=20, help="results each device publishes after deploying")
    ap.add_argument("--markdown", type=Path, default=ROOT / "out" / "bench_fleet.md")
    args = ap.parse_args(argv)
    if args.devices < 3:
        ap.error("--devices must be >= 3 (a canary cohort of 2 and at least one device beyond it)")
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgesdk-fleet-") as tmp:
        fleet = Fleet(args, Path(tmp))
        try:
            print(f"preparing {args.devices} devices on 1.0.0 ...", file=sys.stderr, flush=True)
            fleet.prepare()
            print("rollout of 1.1.0 (good) ...", file=sys.stderr, flush=True)
            good = fleet.rollout("1.1.0", restart_central=True)
            print("rollout of 2.0.0 (healthy but wrong) ...", file=sys.stderr, flush=True)
            bad = fleet.rollout("2.0.0", restart_central=False)
            rows, checks = figures(fleet, good, bad)
        finally:
            fleet.close()
    lines = ["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "| target | result |", "|---|---|"] + [f"| {k} | {'PASS' if ok else 'FAIL'} |" for k, ok in checks]
    lines.append(f"\n{args.devices} devices, {args.parallel} deployments at once, total {time.monotonic() - t_all:.0f} s")
    print("\n".join(lines))
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    tmp_md = args.markdown.with_suffix(".tmp")
    tmp_md.write_text("# bench/fleet.py\n\n" + "\n".join(lines) + "\n")
    os.replace(tmp_md, args.markdown)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["device"]:
        sys.exit(device_main(json.loads(sys.argv[2])))
    sys.exit(main())
