"""One pool of threads for CPU work split into parts (PNG strips, edit chunks).

numpy, OpenCV and ISA-L release the GIL in their loops, so parts of one photo's work run on
several cores. Callers only submit leaf work to it (nothing here waits on the pool), so it
cannot deadlock. A photo's own work (decode, mask fit, edits, encode) runs on a pool of its
own (``engine.budget.run_held``); storage calls and segmentation batches run in asyncio's
default executor.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="cpu")
