"""The llama.cpp engine this checkout built runs on any x86-64 server of the last decade.

llama.cpp compiles for the build machine by default (GGML_NATIVE=ON). A build on a CPU with
AVX-512 or AMX then carries those instructions unconditionally, and on a machine without them (or
whose kernel does not grant AMX tiles) the first inference dies: a general-protection fault at
`ldtilecfg` in libggml-cpu.so killed the Triton stub on a Sapphire Rapids host. The machine that
built it passes every other test, so this one reads what was compiled in.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import llama_cpp
import pytest

# What scripts/build-llama-cpp.sh targets: x86-64-v3 (Haswell, 2013; AMD Excavator, 2015).
BASELINE = ("AVX", "AVX2", "FMA", "F16C")
# Beyond the baseline: compiled in unconditionally, each one breaks the build on some servers.
BEYOND_BASELINE = re.compile(r"^(AVX512\w*|AMX\w*|AVX_VNNI)$")
# AMX tile instructions and AVX-512 registers (zmm, and the k mask registers) in AT&T syntax.
AMX_OR_AVX512 = re.compile(
    r"\b(ldtilecfg|sttilecfg|tileloadd\w*|tilestored|tilezero|tilerelease|tdp\w+)\b|%zmm\d|%k[0-7]\b"
)

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the baseline checked here is x86-64's")


def _system_info() -> dict[str, int]:
    """ggml's build flags, as llama_print_system_info() reports them: `CPU : AVX = 1 | AVX2 = 1 | ...`."""
    info = llama_cpp.llama_print_system_info()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return {name: int(value) for name, value in re.findall(r"(\w+) = (\d+)", text)}


def _engine_libraries() -> list[Path]:
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libraries = sorted(lib_dir.glob("lib*.so*"))
    assert any(p.name.startswith("libggml-cpu") for p in libraries), f"no libggml-cpu in {lib_dir}: {libraries}"
    return libraries


def test_engine_is_built_for_the_baseline_and_nothing_beyond() -> None:
    flags = _system_info()
    assert flags, "llama_print_system_info() reported no build flags"
    beyond = sorted(name for name, value in flags.items() if value and BEYOND_BASELINE.match(name))
    assert not beyond, (
        f"compiled in unconditionally, beyond the x86-64 baseline: {beyond}; rebuild with scripts/build-llama-cpp.sh"
    )
    missing = [name for name in BASELINE if not flags.get(name)]
    assert not missing, f"the baseline's {missing} are not compiled in: the engine runs, but slowly"


def test_engine_libraries_hold_no_amx_or_avx512_instruction() -> None:
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is needed to read the engine's machine code"
    for library in _engine_libraries():
        listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        found = sorted({m.group(0) for m in AMX_OR_AVX512.finditer(listing.stdout)})
        assert not found, f"{library.name} holds AMX/AVX-512 code: {found[:10]}"
