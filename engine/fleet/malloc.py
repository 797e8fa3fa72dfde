"""glibc's malloc for worker processes: large allocations on transparent huge pages.

Freeing a model's session returns its weights to the kernel with ``munmap``, and that runs
while the freeing thread holds the GIL (a C++ destructor called from Python), whichever thread
it is: the event loop cannot run meanwhile. On 4 KiB pages ``munmap`` costs about 0.2 ms per
MB (40-50 ms for a 200 MB model, measured), which every reload that replaces or unloads a large
version paid in health and inference latency. With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(glibc 2.35 and later, read at process start) malloc asks for transparent huge pages for its
large mappings, and the same free takes about 1.3 ms. Workers get it unless the environment
already sets ``glibc.malloc.hugetlb``; other C libraries, older glibc, and kernels with
transparent huge pages ``never`` ignore it. A single process (``--workers 1``) cannot change
its own malloc after start: set the variable where it is started (the image does).
"""

from __future__ import annotations

from collections.abc import Mapping

TUNABLES_ENV = "GLIBC_TUNABLES"
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def with_huge_pages(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES``, unless it names that
    tunable already (the operator's value stands)."""
    tunables = env.get(TUNABLES_ENV, "")
    if any(part.split("=")[0] == "glibc.malloc.hugetlb" for part in tunables.split(":")):
        return dict(env)
    return {**env, TUNABLES_ENV: f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}
