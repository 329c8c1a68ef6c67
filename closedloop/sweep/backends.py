"""Where the cells of a sweep run: a pool of local processes, or a Dask distributed cluster."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from closedloop.errors import ClosedLoopError
from closedloop.sweep.cell import CellTask, one_line, run_cell

#: Cells in flight per worker (running plus queued), so a worker never waits for its next cell.
IN_FLIGHT_PER_WORKER = 2
#: Thread settings of local workers: Dask's nanny sets the same, so local and Dask rows agree.
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_TRIM_THRESHOLD_": "65536",
}


def _worker_init(parent_pid: int) -> None:
    """Local workers: Ctrl-C is the parent's to handle, and a worker ends with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="closedloop-sweep-parent", daemon=True).start()


def local_workers() -> int:
    """The cores this process may run on (``--jobs`` default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (those the user has not set) for the processes started inside."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class LocalBackend:
    """Cells on a pool of local worker processes; a pool whose worker died is started anew."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.jobs, mp_context=self._context, initializer=_worker_init, initargs=(os.getpid(),)
        )

    def describe(self) -> str:
        return f"{self.jobs} local worker process{'es' if self.jobs != 1 else ''}"

    def capacity(self) -> int:
        return IN_FLIGHT_PER_WORKER * self.jobs

    def submit(self, task: CellTask):
        return self._pool.submit(run_cell, task)

    def wait(self, futures) -> list:
        done, _ = wait_futures(list(futures), return_when=FIRST_COMPLETED)
        return list(done)

    def outcome(self, future) -> dict | None:
        """The cell's row, or None when its worker died (the pool is then started anew)."""
        try:
            return future.result()
        except BrokenProcessPool:
            return None

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self, *, abort: bool = False) -> None:
        if abort:
            # the cells running now would otherwise run to their end after an interrupt
            for process in list(getattr(self._pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _worker_versions() -> dict:
    import platform

    import closedloop

    return {"closedloop": closedloop.__version__, "python": platform.python_version()}


class DaskBackend:
    """Cells on a Dask distributed cluster (``dask.distributed.Client``)."""

    name = "dask"

    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ClosedLoopError(
                f"--scheduler needs dask.distributed, which cannot be imported: {exc}."
            ) from None
        self.address = address
        try:
            self.client = Client(address, timeout=timeout_s, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClosedLoopError(
                f"cannot reach the Dask scheduler at {address!r}: {one_line(exc) or type(exc).__name__}. "
                "Give the address the scheduler printed, e.g. tcp://10.0.0.5:8786."
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=timeout_s)
        except (TimeoutError, OSError):
            self.client.close()
            raise ClosedLoopError(
                f"the Dask scheduler at {address!r} has no worker after {timeout_s:g} s; start some with "
                f"dask worker {address}."
            ) from None
        import closedloop

        try:
            versions = self.client.run(_worker_versions)
        except Exception as exc:  # noqa: BLE001 -- whatever stops the workers importing closedloop
            self.client.close()
            raise ClosedLoopError(
                f"the Dask workers at {address!r} cannot run closedloop ({one_line(exc)}); install "
                f"closedloop {closedloop.__version__} in the workers' environment."
            ) from None
        odd = {
            w: v["closedloop"]
            for w, v in versions.items()
            if v["closedloop"] != closedloop.__version__
        }
        if odd:
            self.client.close()
            listed = ", ".join(f"{w} has {v}" for w, v in sorted(odd.items()))
            raise ClosedLoopError(
                f"the Dask workers must run closedloop {closedloop.__version__} as this one does: {listed}."
            )

        from distributed import as_completed

        # every future submitted, in the order they finish; the token keeps this sweep's task
        # keys apart from another's with the same cells on a shared scheduler
        self._finished = as_completed(loop=self.client.loop)
        self._token = uuid.uuid4().hex[:8]
        self._threads = (0.0, 1)

    def describe(self) -> str:
        n = len(self.client.nthreads())
        return f"Dask cluster {self.address} ({n} worker{'s' if n != 1 else ''})"

    def capacity(self) -> int:
        checked, threads = self._threads
        if time.monotonic() - checked > 5.0:  # workers may join or leave during a sweep
            threads = max(1, sum(self.client.nthreads().values()))
            self._threads = (time.monotonic(), threads)
        return IN_FLIGHT_PER_WORKER * threads

    def submit(self, task: CellTask):
        future = self.client.submit(
            run_cell, task, key=f"closedloop-cell-{task.cell}-{self._token}", retries=0
        )
        self._finished.add(future)
        return future

    def wait(self, futures) -> list:
        first = next(self._finished)
        return [first, *self._finished.next_batch(block=False)]

    def outcome(self, future) -> dict | None:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 -- KilledWorker after Dask's retries, or a lost task
            from distributed import KilledWorker

            if isinstance(exc, KilledWorker):
                return {
                    "error": "the Dask worker died while replaying this cell, several times "
                    "(out of memory, or killed)"
                }
            if isinstance(exc, (OSError, TimeoutError)) or type(exc).__name__ == "CancelledError":
                raise ClosedLoopError(
                    f"lost the Dask scheduler at {self.address!r} ({one_line(exc) or type(exc).__name__}); "
                    "the finished cells are in results.csv: run the same sweep again to go on."
                ) from None
            return {"error": one_line(f"internal error on the worker: {type(exc).__name__}: {exc}")}
        finally:
            future.release()

    def restart(self) -> None:  # Dask reschedules the tasks of a dead worker itself
        pass

    def close(self, *, abort: bool = False) -> None:
        self.client.close()
