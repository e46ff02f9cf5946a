"""Process-wide settings (npmobilenet.runtime): OpenBLAS's kernels and glibc's allocator."""

import os
import subprocess
import sys
import textwrap

import pytest

from npmobilenet.runtime import FIRST_UNKNOWN_AMD_FAMILY, avx512_coretype, configure_openblas, cpu_info

AVX512 = "fpu sse avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl"


def _info(vendor="AuthenticAMD", family=FIRST_UNKNOWN_AMD_FAMILY, flags=AVX512):
    return {"vendor_id": vendor, "cpu family": str(family), "flags": flags}


def test_zen5_with_avx512_gets_the_avx512_kernels():
    assert avx512_coretype(_info()) == "SkylakeX"
    assert avx512_coretype(_info(flags=AVX512 + " avx512_bf16")) == "Cooperlake"


@pytest.mark.parametrize("info", [
    _info(family=FIRST_UNKNOWN_AMD_FAMILY - 1),      # Zen 4: OpenBLAS knows it
    _info(vendor="GenuineIntel"),                     # Intel: OpenBLAS knows it
    _info(flags="fpu sse avx avx2 fma avx512f"),      # not all the AVX-512 SkylakeX needs
    {"vendor_id": "AuthenticAMD", "cpu family": "?", "flags": AVX512},
    {},
])
def test_other_cpus_are_left_to_openblas(info):
    assert avx512_coretype(info) is None


def test_a_users_settings_win():
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_THREAD_TIMEOUT": "10"}
    configure_openblas(environ)
    assert environ == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_THREAD_TIMEOUT": "10"}
    environ = {}
    configure_openblas(environ)
    assert environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert environ.get("OPENBLAS_CORETYPE") == (avx512_coretype(cpu_info()) if sys.platform == "linux" else None)


def _run(code: str, unset=()) -> str:
    env = {key: value for key, value in os.environ.items() if key not in unset}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=env, timeout=120, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(avx512_coretype(cpu_info()) is None, reason="not a CPU whose OpenBLAS kernels are forced")
def test_importing_npmobilenet_first_gives_numpy_the_avx512_kernels():
    code = """
        import npmobilenet, numpy
        from npmobilenet.runtime import openblas_core
        print(openblas_core())
    """
    core = _run(code, unset=("OPENBLAS_CORETYPE",))
    assert core is not None and core != "Haswell", core


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    code = """
        import resource, sys
        from npmobilenet.runtime import reuse_freed_memory
        import numpy as np
        if sys.argv[-1] == "reuse":
            assert reuse_freed_memory()
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        np.ones(64 << 20, np.uint8)          # 64 MiB, above any mmap threshold; freed at once
        before = faults()
        np.ones(64 << 20, np.uint8)
        print(faults() - before)
    """
    plain = int(_run(code.replace('sys.argv[-1] == "reuse"', "False")))
    reused = int(_run(code.replace('sys.argv[-1] == "reuse"', "True")))
    huge_pages = (64 << 20) // (2 << 20)  # numpy asks for transparent huge pages where it can
    assert plain >= huge_pages            # the second array faulted in again
    assert reused < plain / 10, (plain, reused)  # ... unless the freed memory was kept
