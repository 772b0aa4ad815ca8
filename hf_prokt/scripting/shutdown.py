"""Ending a process of a multi-process run cleanly, and a script stopped by SIGTERM with exit code 143.

Why a script launched on several CPU processes (gloo) needs this: gloo runs each collective on a
worker thread of its own (``pt_gloo_runloop``), and that thread drops its last reference to a
finished collective a moment *after* the caller has been told the collective is done. If the
collective held tensors whose Python objects Python has already let go, dropping them needs the GIL.
When the script's last collective is followed closely by the end of the script, that moment can fall
inside the interpreter's teardown; CPython (up to 3.13) ends a foreign thread that asks for the GIL
then with ``pthread_exit``, whose unwinding runs into gloo's ``noexcept`` work destructor, and the C++
runtime aborts the whole process: ``terminate called without an active exception``, exit code -6,
after all the work was written. ``destroy_process_group()`` does not remove the race: a process group
still referenced by a ``DistributedDataParallel`` model (as the `Trainer`'s is) stays alive and its
worker threads are not joined.

:func:`end_process` removes it: every process waits for the others (no process leaves while another
is still in a collective), then Python's exit work is done by hand (non-daemon threads joined,
``atexit`` handlers run, standard streams flushed) and the process exits without the interpreter's
object teardown, where the race lives.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable

import torch

from ..robustness.sigterm import TrainingTerminated


def end_process(exit_code: int = 0) -> None:
    """The last call of a script that may run under ``torchrun`` / ``accelerate launch``.

    In a single process (no process group) it returns and the interpreter exits as usual. Under a
    process group it waits for every process, runs what Python runs at exit (joins non-daemon
    threads, runs ``atexit`` handlers such as logging's and the trackers', flushes ``stdout`` and
    ``stderr``) and ends the process with ``exit_code`` without tearing the interpreter's objects
    down. Files must be closed before (``with`` blocks): a still-open Python file object is not
    flushed by the interpreter's teardown any more.

    Call it after everything that needs the other processes (training, evaluation, prediction,
    ``save_model``, ``push_to_hub``), on every process.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed:
        return
    torch.distributed.barrier()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):  # replaced or closed streams
            pass
    os._exit(exit_code)


def run_script(main: Callable[[], object]) -> None:
    """Run a script's ``main()`` and end the process as `end_process` does, on every process.

    A ``main()`` stopped by SIGTERM (`TrainingTerminated`, after its checkpoint was saved) prints one line on the
    main process (which checkpoint, how to resume) instead of a traceback, and the process exits 143, the code
    of a process ended by SIGTERM. Any other exception propagates as usual.
    """
    try:
        main()
    except TrainingTerminated as stopped:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            print(stopped, file=sys.stderr, flush=True)
        end_process(stopped.code)
        raise SystemExit(stopped.code) from None
    end_process()
