"""Cost of a hostile PAX header: the interpreter's tarfile against EdgeSDK's bounded reader.

A PAX header of N digits (CVE-2024-6232: quadratic in Pythons before 3.11.10). Prints, per N,
the seconds each reader needs to read (or refuse) the first member, and their ratio, measured in
this one run. Usage: python bench/bench_tar_headers.py [N ...]   (default 5000 10000 20000)
"""
from __future__ import annotations

import io
import sys
import tarfile
import time

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "tests"))

from edgesdk.errors import PackageError  # noqa: E402
from edgesdk.provision.tarstream import read_members  # noqa: E402
from provisiondata import raw_member  # noqa: E402


def archive(digits: int) -> bytes:
    return raw_member(b"././@PaxHeader", b"1" * digits, b"x") + raw_member(b"bundle/f", b"x") + bytes(1024)


def time_tarfile(data: bytes) -> float:
    t0 = time.perf_counter()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
            next(iter(tf), None)
    except tarfile.TarError:
        pass
    return time.perf_counter() - t0


def time_bounded(data: bytes) -> float:
    t0 = time.perf_counter()
    try:
        next(read_members(io.BytesIO(data), "bench"), None)
    except PackageError:
        pass
    return time.perf_counter() - t0


def main(sizes: list[int]) -> None:
    print(f"python {sys.version.split()[0]}")
    print(f"{'digits':>8} {'tarfile s':>10} {'bounded s':>10} {'ratio':>8}")
    for i, n in enumerate(sizes, 1):
        data = archive(n)
        slow, fast = time_tarfile(data), time_bounded(data)
        print(f"{n:>8} {slow:>10.4f} {fast:>10.6f} {slow / max(fast, 1e-9):>8.0f}   [{i}/{len(sizes)}]", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5_000, 10_000, 20_000])
