"""lai.processes: the CPUs lai may use, and what a child's death is called."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lai.processes import cgroup_cpu_quota, usable_cpus


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/user.slice/job\n")
    fs = tmp_path / "fs"
    _tree(fs, {"cpu.max": "max 100000\n", "user.slice/cpu.max": "150000 100000\n", "user.slice/job/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(proc, fs) == 1.5
    _tree(fs, {"user.slice/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(proc, fs) is None  # unlimited everywhere


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    fs = tmp_path / "fs"
    _tree(fs, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(proc, fs) == 0.5
    _tree(fs, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n"})
    assert cgroup_cpu_quota(proc, fs) is None
    assert cgroup_cpu_quota(tmp_path / "missing", fs) is None


def test_usable_cpus_follows_the_affinity_mask() -> None:
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from lai.processes import usable_cpus; print(usable_cpus())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_lai_shortens_openmp_spins_unless_the_user_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import lai, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"

    def seen(**extra: str) -> str:
        return subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True).stdout.strip()

    assert seen() == "1000 None"
    assert seen(OMP_WAIT_POLICY="PASSIVE") == "None PASSIVE"
    assert seen(GOMP_SPINCOUNT="5") == "5 None"
