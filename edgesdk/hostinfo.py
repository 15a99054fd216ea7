"""What is this machine, and which shipped device profile fits it best?

`detect_host()` reads plain files (/proc/cpuinfo, /proc/meminfo, the device tree,
/etc/nv_tegra_release, USB ids under /sys) and asks the installed engines what they see
through each backend record's host probe (runtimes.registry `devices`: onnxruntime's
providers, OpenVINO's devices); engines are imported lazily and a missing one is fine. Every parser takes the file's contents, and `detect_host(root=DIR)` reads
the same files under DIR, so recorded samples of other machines (tests/data/hosts/)
go through exactly the code a real host does.

`closest_profile()` scores every profile's `detect:` hints against the host and returns
the best one with the reasons, in words a person can check.
"""
from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from .errors import ProfileError
from .profiles import DeviceProfile, list_profiles, load_profile

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# CPU flags that matter for inference, in the order people read them.
ML_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
            "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
            "asimd", "neon", "fphp", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")

# ARM "CPU implementer" and "CPU part" ids (from the Arm and NVIDIA TRMs, as lscpu knows them).
ARM_IMPLEMENTERS = {"0x41": "ARM", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2", "0x004": "Carmel",
}

# Known accelerators by USB id, for the human-readable report.
USB_NAMES = {"1a6e:089a": "Coral Edge TPU (USB, before firmware load)", "18d1:9302": "Coral Edge TPU (USB)",
             "03e7:2485": "Intel Movidius Myriad X (NCS2, unbooted)", "03e7:f63b": "Intel Movidius Myriad X (NCS2)"}
# Edge TPU, accel-class NPUs, Arm Mali (kbase driver) and Qualcomm Adreno (kgsl) GPUs
DEV_NODES = ("/dev/apex_0", "/dev/accel/accel0", "/dev/mali0", "/dev/kgsl-3d0")


# --------------------------------------------------------------------------- parsers

@dataclass(frozen=True)
class CpuInfo:
    processors: int = 0
    vendor: str = ""
    model: str = ""
    flags: frozenset = frozenset()
    parts: tuple[str, ...] = ()       # ARM "CPU part" ids, in order of first appearance
    arch: str = ""                    # guessed from the file: x86_64, aarch64, armv7l or ""
    hardware: str = ""                # ARM "Hardware" line (e.g. BCM2711)
    board: str = ""                   # Raspberry Pi "Model" line


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse /proc/cpuinfo (x86 or Arm). Flags are those present on every processor."""
    blocks: list[dict[str, str]] = []
    tail: dict[str, str] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor" and current:
            blocks.append(current)
            current = {}
        current[key] = value
    if current:
        blocks.append(current)
    procs = [b for b in blocks if "processor" in b]
    for b in blocks:
        if "processor" not in b:
            tail.update(b)          # the Raspberry Pi trailer (Hardware, Revision, Model)

    flag_sets = []
    for b in procs:
        raw = b.get("flags") or b.get("Features")
        if raw is not None:
            flag_sets.append(set(raw.split()))
    flags = set.intersection(*flag_sets) if flag_sets else set()
    if "asimd" in flags:
        flags.add("neon")           # arm64 calls NEON "asimd"; accept both names

    first = procs[0] if procs else {}
    parts = tuple(dict.fromkeys(b["CPU part"].lower() for b in procs if "CPU part" in b))
    vendor = first.get("vendor_id", "")
    if not vendor and "CPU implementer" in first:
        impl = first["CPU implementer"].lower()
        vendor = ARM_IMPLEMENTERS.get(impl, impl)
    model = first.get("model name", "")
    if parts and (not model or model.startswith("ARMv")):
        names = [ARM_PARTS.get(p, p) for p in parts]
        model = " + ".join(dict.fromkeys(names))
    arch = ""
    cpu_arch = first.get("CPU architecture", "")
    if "vendor_id" in first or "flags" in first:
        arch = "x86_64" if "lm" in flags else "i686"
    elif cpu_arch:
        # A 64-bit kernel reports 8; a 32-bit kernel on the same core reports 7 and "(v7l)".
        arch = "aarch64" if cpu_arch.startswith("8") and "v7l" not in model else "armv7l"
    return CpuInfo(processors=len(procs), vendor=vendor, model=model, flags=frozenset(flags), parts=parts,
                   arch=arch, hardware=tail.get("Hardware", first.get("Hardware", "")),
                   board=tail.get("Model", ""))


def parse_meminfo(text: str) -> int:
    """MemTotal in MiB (0 when absent)."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) // 1024 if m else 0


def parse_device_tree_model(data: Union[bytes, str]) -> str:
    """/proc/device-tree/model is NUL-terminated."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data.replace("\x00", "").strip()


def parse_tegra_release(text: str) -> str:
    """'# R36 (release), REVISION: 4.3, ...' -> 'R36.4.3' ('' when not a Jetson)."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else ""


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "armv7l"}.get(m, m)


# --------------------------------------------------------------------------- host facts

@dataclass(frozen=True)
class HostInfo:
    """Facts about a machine that decide which profile fits it."""

    arch: str
    cpu_model: str
    vendor: str
    cpu_flags: frozenset
    cpu_parts: tuple[str, ...]
    cores: int
    memory_mb: int
    board: str = ""                       # device-tree model (ARM boards, Jetson)
    tegra_release: str = ""               # L4T release on a Jetson, e.g. R36.4.3
    usb_ids: frozenset = frozenset()      # "vvvv:pppp"
    dev_nodes: frozenset = frozenset()
    accel_drivers: frozenset = frozenset()
    ort_providers: tuple[str, ...] = ()
    openvino_devices: tuple[str, ...] = ()
    openvino_device_names: tuple[tuple[str, str], ...] = ()
    backends: tuple[str, ...] = ()        # EdgeSDK runtimes backends installed here
    #: (backend, its devices here) for every backend record with a host probe
    engine_devices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    root: str = "/"
    probe_notes: tuple[str, ...] = ()     # what could not be probed, and why

    @property
    def ml_flags(self) -> list[str]:
        flags = [f for f in ML_FLAGS if f in self.cpu_flags]
        if "asimd" in flags and "neon" in flags:
            flags.remove("neon")     # the alias we added; arm64 already says asimd
        return flags

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch, "cpu_model": self.cpu_model, "vendor": self.vendor, "cores": self.cores,
            "memory_mb": self.memory_mb, "board": self.board or None, "tegra_release": self.tegra_release or None,
            "ml_flags": self.ml_flags, "cpu_flags": sorted(self.cpu_flags), "cpu_parts": list(self.cpu_parts),
            "usb_ids": sorted(self.usb_ids), "dev_nodes": sorted(self.dev_nodes),
            "accel_drivers": sorted(self.accel_drivers), "ort_providers": list(self.ort_providers),
            "openvino_devices": list(self.openvino_devices),
            "openvino_device_names": dict(self.openvino_device_names), "backends": list(self.backends),
            "engine_devices": {b: list(d) for b, d in self.engine_devices},
            "root": self.root, "probe_notes": list(self.probe_notes),
        }


def _read(path: Path, binary: bool = False) -> Optional[Union[str, bytes]]:
    try:
        return path.read_bytes() if binary else path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _usb_ids(root: Path) -> frozenset:
    ids = set()
    for dev in (root / "sys/bus/usb/devices").glob("*"):
        vendor, product = _read(dev / "idVendor"), _read(dev / "idProduct")
        if vendor and product:
            ids.add(f"{vendor.strip().lower()}:{product.strip().lower()}")
    return frozenset(ids)


def _accel_drivers(root: Path) -> frozenset:
    names = set()
    for dev in (root / "sys/class/accel").glob("accel*"):
        link = dev / "device" / "driver"
        if link.is_symlink():
            names.add(Path(os.readlink(link)).name)
        else:
            text = _read(link)      # recorded samples store the driver name in a file
            if text and text.strip():
                names.add(text.strip())
    return frozenset(names)


def probe_all() -> tuple[dict[str, Any], tuple[str, ...], list[str]]:
    """Every backend record's host probe: ({backend: HostDevices}, installed backends, notes)."""
    try:
        from runtimes.registry import available_backends, host_probes, probe_devices
    except ImportError as exc:
        return {}, (), [f"runtimes registry unavailable: {exc}"]
    found = {name: probe_devices(name) for name in host_probes()}
    notes = [note for d in found.values() for note in d.notes]
    return found, tuple(available_backends()), notes


def detect_host(root: PathLike = "/", engines: Optional[bool] = None) -> HostInfo:
    """Inspect the machine (or, with `root`, a recorded copy of its files).

    `engines` asks onnxruntime/OpenVINO what they see; it defaults to True for the real
    root and False for a recorded one (whose engines are not here to ask).
    """
    base = Path(root)
    real = base.resolve() == Path("/")
    if engines is None:
        engines = real
    notes: list[str] = []
    cpu_text = _read(base / "proc/cpuinfo")
    if cpu_text is None:
        notes.append(f"{base / 'proc/cpuinfo'} is not readable; CPU flags unknown")
    cpu = parse_cpuinfo(cpu_text or "")
    mem_text = _read(base / "proc/meminfo")
    memory_mb = parse_meminfo(mem_text or "")
    if not memory_mb and real:
        try:
            memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        except (ValueError, OSError, AttributeError):
            notes.append("memory size unknown")
    model_bytes = _read(base / "proc/device-tree/model", binary=True)
    if model_bytes is None:
        model_bytes = _read(base / "sys/firmware/devicetree/base/model", binary=True)
    board = parse_device_tree_model(model_bytes) if model_bytes else ""
    board = board or cpu.board
    tegra = parse_tegra_release(_read(base / "etc/nv_tegra_release") or "")
    if real:
        arch = normalize_arch(platform.machine())
        cores = os.cpu_count() or cpu.processors
    else:
        arch = cpu.arch
        cores = cpu.processors
    dev_nodes = frozenset(n for n in DEV_NODES if (base / n.lstrip("/")).exists())
    found: dict[str, Any] = {}
    backends: tuple[str, ...] = ()
    if engines:
        found, backends, engine_notes = probe_all()
        notes.extend(engine_notes)
    devices = {name: d.devices for name, d in found.items()}
    for note in notes:
        log.info("detect: %s", note)
    return HostInfo(arch=arch, cpu_model=cpu.model, vendor=cpu.vendor, cpu_flags=cpu.flags, cpu_parts=cpu.parts,
                    cores=cores, memory_mb=memory_mb, board=board, tegra_release=tegra, usb_ids=_usb_ids(base),
                    dev_nodes=dev_nodes, accel_drivers=_accel_drivers(base),
                    ort_providers=devices.get("onnxruntime", ()), openvino_devices=devices.get("openvino", ()),
                    openvino_device_names=found["openvino"].names if "openvino" in found else (), backends=backends,
                    engine_devices=tuple(devices.items()), root=str(base), probe_notes=tuple(notes))


_THIS_HOST: Optional[HostInfo] = None


def this_host(refresh: bool = False) -> HostInfo:
    """`detect_host()` of the real machine, probed once per process (engines are slow to import)."""
    global _THIS_HOST
    if _THIS_HOST is None or refresh:
        _THIS_HOST = detect_host()
    return _THIS_HOST


# --------------------------------------------------------------------------- matching

# Weights: a board or an attached accelerator names the device outright; CPU flags
# narrow a CPU class (more required flags = more specific); the rest only tip ties.
W_ATTACHED, W_BOARD, W_TEGRA, W_PART, W_MODEL, W_DEVNAME, W_FLAG, W_VENDOR, W_MEMORY = \
    200, 100, 30, 20, 20, 20, 10, 5, 3


@dataclass
class Match:
    """How one profile fared against the host."""

    profile: DeviceProfile
    score: int = 1
    reasons: list[str] = field(default_factory=list)
    ruled_out: Optional[str] = None
    evidence: int = 0          # positive hints that matched (for "close but no")

    @property
    def candidate(self) -> bool:
        return self.ruled_out is None


def _any_regex(patterns: Sequence[str], text: str) -> Optional[str]:
    for pat in patterns:
        if text and re.search(pat, text, re.IGNORECASE):
            return pat
    return None


def evaluate(profile: DeviceProfile, host: HostInfo) -> Match:
    """Score one profile against the host; `ruled_out` says why it cannot be this host."""
    d = profile.detect
    m = Match(profile)

    attached: list[str] = []
    for uid in d.usb_ids:
        if uid.lower() in host.usb_ids:
            attached.append(f"USB device {uid} ({USB_NAMES.get(uid.lower(), 'accelerator')}) is attached")
    for node in d.dev_nodes:
        if node in host.dev_nodes:
            attached.append(f"{node} exists")
    for drv in d.accel_drivers:
        if drv in host.accel_drivers:
            attached.append(f"an accel device uses the {drv} kernel driver")
    for dev in d.openvino_devices:
        if any(x == dev or x.startswith(dev + ".") for x in host.openvino_devices):
            attached.append(f"OpenVINO lists a {dev} device")
    usb_attached = any(uid.lower() in host.usb_ids for uid in d.usb_ids)

    # USB accelerators work behind any host CPU; everything else must match the arch.
    if profile.arch != host.arch and not usb_attached:
        if host.board and d.board and _any_regex(d.board, host.board):
            m.ruled_out = (f"the board {host.board!r} matches, but the OS reports {host.arch or 'an unknown arch'} "
                           f"and this profile needs {profile.arch} (install a 64-bit OS)"
                           if profile.arch == "aarch64" else
                           f"the board {host.board!r} matches, but the OS reports {host.arch}, not {profile.arch}")
            m.evidence = 1
        else:
            m.ruled_out = f"needs {profile.arch}, host is {host.arch or 'unknown'}"
        return m

    if d.attachments:
        if not attached:
            wanted = [*(f"USB {u}" for u in d.usb_ids), *d.dev_nodes,
                      *(f"{x} driver" for x in d.accel_drivers), *(f"OpenVINO {x}" for x in d.openvino_devices)]
            m.ruled_out = f"none of its devices is present ({', '.join(wanted)})"
            return m
        m.score += W_ATTACHED * len(attached)
        m.evidence += len(attached)
        m.reasons.extend(attached)

    if d.board:
        pat = _any_regex(d.board, host.board)
        if pat is None:
            m.ruled_out = (f"board {host.board!r} is not one of its boards" if host.board
                           else "no device-tree board model on this host")
            return m
        m.score += W_BOARD
        m.evidence += 1
        m.reasons.append(f"board {host.board!r} (device tree) matches {pat!r}")

    if d.cpu_parts:
        hit = [p for p in d.cpu_parts if p.lower() in host.cpu_parts]
        if not hit:
            have = ", ".join(f"{p} ({ARM_PARTS.get(p, '?')})" for p in host.cpu_parts) or "none"
            m.ruled_out = f"CPU part {', '.join(d.cpu_parts)} expected, found {have}"
            return m
        m.score += W_PART
        m.evidence += 1
        m.reasons.append(f"CPU part {hit[0]} = {ARM_PARTS.get(hit[0], 'known core')}")

    if d.cpu_flags:
        missing = [f for f in d.cpu_flags if f not in host.cpu_flags]
        present = [f for f in d.cpu_flags if f in host.cpu_flags]
        if missing:
            m.evidence += len(present)
            m.ruled_out = (f"needs CPU flags {', '.join(missing)}, which /proc/cpuinfo does not list"
                           + (f" (has {', '.join(present)})" if present else ""))
            return m
        m.score += W_FLAG * len(present)
        m.evidence += len(present)
        m.reasons.append(f"CPU flags {', '.join(present)} present in /proc/cpuinfo")

    if d.cpu_flags_absent:
        bad = [f for f in d.cpu_flags_absent if f in host.cpu_flags]
        if bad:
            m.ruled_out = f"the CPU has {', '.join(bad)}, which this profile excludes (a more capable class fits)"
            return m
        m.reasons.append(f"no {', '.join(d.cpu_flags_absent)} (as this class expects)")

    if d.tegra_release and host.tegra_release:
        if any(host.tegra_release.startswith(t + ".") or host.tegra_release == t for t in d.tegra_release):
            m.score += W_TEGRA
            m.evidence += 1
            m.reasons.append(f"Jetson Linux {host.tegra_release} (/etc/nv_tegra_release)")
        else:
            m.reasons.append(f"note: Jetson Linux {host.tegra_release} is not the expected "
                             f"{'/'.join(d.tegra_release)}")
    if d.vendor and host.vendor in d.vendor:
        m.score += W_VENDOR
        m.reasons.append(f"vendor {host.vendor}")
    pat = _any_regex(d.cpu_model, host.cpu_model)
    if pat:
        m.score += W_MODEL
        m.reasons.append(f"CPU model {host.cpu_model!r} matches {pat!r}")
    for dev, name in host.openvino_device_names:
        pat = _any_regex(d.device_names, name)
        if pat:
            m.score += W_DEVNAME
            m.reasons.append(f"OpenVINO {dev} is {name!r}")
            break
    # Memory only tells apart variants of one board (Orin Nano 4 GB vs 8 GB); for CPU
    # classes the profile's memory is a reference figure, not evidence.
    if (d.board or d.attachments) and host.memory_mb and 0.75 <= host.memory_mb / profile.memory_mb <= 1.34:
        m.score += W_MEMORY
        m.reasons.append(f"memory {host.memory_mb} MiB is close to the profile's {profile.memory_mb} MiB")
    if not m.reasons:
        m.reasons.append(f"{host.arch} host; no more specific profile matched, so this generic one applies")
    return m


def rank_profiles(host: HostInfo, profiles: Iterable[DeviceProfile]) -> list[Match]:
    """All profiles, best first (candidates before ruled-out ones)."""
    matches = [evaluate(p, host) for p in profiles]
    return sorted(matches, key=lambda mt: (not mt.candidate, -mt.score, -mt.evidence, mt.profile.name))


def closest_profile(host: Optional[HostInfo] = None,
                    profiles: Optional[Iterable[DeviceProfile]] = None,
                    extra_dirs: Optional[Iterable[PathLike]] = None) -> tuple[DeviceProfile, list[str]]:
    """The profile that fits the host best, and why (best reasons first, then near misses).

    Raises ProfileError when no profile fits (e.g. a 32-bit Arm OS), saying why the
    nearest ones were ruled out.
    """
    host = host or this_host()
    ranked = rank_profiles(host, profiles if profiles is not None else list_profiles(extra_dirs))
    if not ranked or not ranked[0].candidate:
        near = [mt for mt in ranked if mt.evidence] or ranked[:3]
        why = "; ".join(f"{mt.profile.name}: {mt.ruled_out}" for mt in near[:4])
        raise ProfileError(f"no device profile fits this host ({host.arch}, {host.cpu_model or 'unknown CPU'}"
                           f"{', ' + repr(host.board) if host.board else ''}). {why}. "
                           "Write a profile for it (see `edgesdk profiles show generic-arm64`) and pass --profiles-dir.")
    best = ranked[0]
    reasons = list(best.reasons)
    others = [mt for mt in ranked[1:] if mt.profile.name not in best.profile.chain]
    # Near misses first (a profile that matched some hints, then failed one): they
    # say what this host is NOT, which is what people doubt. Then the runners-up.
    near = [mt for mt in others if not mt.candidate and mt.evidence and mt.profile.arch == host.arch]
    reasons += [f"not {mt.profile.name}: {mt.ruled_out}" for mt in near[:3]]
    runners = [mt for mt in others if mt.candidate and mt.score > 1]
    reasons += [f"also fits {mt.profile.name} (score {mt.score} < {best.score})" for mt in runners[:2]]
    return best.profile, reasons


def is_this_host(profile: Union[str, DeviceProfile], host: Optional[HostInfo] = None,
                 extra_dirs: Optional[Iterable[PathLike]] = None) -> bool:
    """True when `profile` is (a variant of) the profile that fits this host best.

    Converters use it for `--precision auto`: measuring here only tells the truth about
    the target when the target is this kind of machine.
    """
    prof = load_profile(profile, extra_dirs) if isinstance(profile, str) else profile
    host = host or this_host()
    try:
        best, _ = closest_profile(host, extra_dirs=extra_dirs)
    except ProfileError:
        return False
    if prof.name == best.name:
        return True
    related = prof.name in best.chain or best.name in prof.chain
    return related and evaluate(prof, host).candidate


__all__ = ["HostInfo", "CpuInfo", "Match", "parse_cpuinfo", "parse_meminfo", "parse_device_tree_model",
           "parse_tegra_release", "detect_host", "this_host", "evaluate", "rank_profiles", "closest_profile", "is_this_host",
           "ML_FLAGS"]
