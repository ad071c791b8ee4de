"""Helper processes: the published forward on request, and one large image in a fresh process."""

import multiprocessing
import resource
import time
from pathlib import Path

import torch

from demoe.net import ARCHITECTURES, reference
from demoe.runner import inference


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's ``VmHWM`` counts from the process's own start,
    whereas ``ru_maxrss`` of a freshly spawned process includes its parent's memory at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reference_worker(conn, arch: str, kwargs: dict, state: dict, threads: int) -> None:
    """The helper process: runs ``reference.forward`` on request and answers (seconds, output)."""
    torch.set_num_threads(threads)
    model = ARCHITECTURES[arch](**kwargs)
    model.load_state_dict(state)
    model.eval()
    while (request := conn.recv()) is not None:
        x, k, want_output = request
        model.set_k(k)
        with torch.inference_mode():
            start = time.perf_counter()
            out = reference.forward(model, x)["output"]
            seconds = time.perf_counter() - start
        conn.send((seconds, out if want_output else None))


def large_image_worker(conn, arch: str, kwargs: dict, state: dict, threads: int, job: dict) -> None:
    """Restore one large random image in tiles in a fresh process; answers seconds and peak RSS."""
    torch.set_num_threads(threads)
    model = ARCHITECTURES[arch](**kwargs)
    model.load_state_dict(state)
    del state
    inference.prepare(model)
    torch.manual_seed(job["seed"])
    image = torch.rand(1, 3, *job["size"])
    start = time.perf_counter()
    inference.restore(model, image, tile=job["tile"], overlap=job["overlap"], attention=job["attention"])
    seconds = time.perf_counter() - start
    conn.send({"seconds": seconds, "peak_rss_bytes": peak_rss_bytes()})


def in_helper(target, *args):
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    child.close()
    return process, parent
