"""Time writing and reading the compressed splat formats (.spz v3/v4, .sog) and their sizes.

    python benchmarks/splat_formats.py [--gaussians 200000] [--degree 3] [--json FILE]

Gaussians are random but plausible (positions in a 10 m box, SH inside [-0.9, 0.9]); sizes
on real captures are smaller, since their attributes compress better.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_formats_ply import random_arrays  # noqa: E402

from splatfx.io.formats import ply, sog, spz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=200_000)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    arrays = random_arrays(args.gaussians, args.degree, seed=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ply_path = Path(tmp) / "s.ply"
        ply.write_arrays(arrays, ply_path)
        results["ply"] = {"bytes": ply_path.stat().st_size}
        for name, write, read in (
                ("spz v3", lambda p: spz.write_arrays(arrays, p, version=3), spz.read_arrays),
                ("spz v4", lambda p: spz.write_arrays(arrays, p, version=4), spz.read_arrays),
                ("sog", lambda p: sog.write_arrays(arrays, p), sog.read_arrays)):
            path = Path(tmp) / ("s.sog" if name == "sog" else "s.spz")
            started = time.perf_counter()
            write(path)
            written = time.perf_counter() - started
            started = time.perf_counter()
            read(path)
            results[name] = {"write_s": round(written, 2), "read_s": round(time.perf_counter() - started, 2),
                             "bytes": path.stat().st_size}
    for name, r in results.items():
        print(f"{name:7s} {r['bytes'] / 1e6:8.1f} MB  " + (f"write {r['write_s']:6.2f} s  read {r['read_s']:5.2f} s"
                                                             if "write_s" in r else ""))
    if args.json:
        args.json.write_text(json.dumps({"gaussians": args.gaussians, "degree": args.degree, **results}, indent=1))


if __name__ == "__main__":
    main()
