"""SIGTERM, what clusters and preemptible machines send before they stop a job: recorded, not obeyed at once.

`SigtermFlag` replaces the process's SIGTERM handler for the duration of a block (``train()``) by one that only
records the signal; the trainer then saves a crash-safe checkpoint at the end of the current optimizer step and
raises `TrainingTerminated`, which exits 143 (128 + 15, what a shell reports for a process ended by SIGTERM) when
nobody catches it. Python runs signal handlers in the main thread only, so the flag is installed there only;
elsewhere SIGTERM keeps its behaviour.
"""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


class TrainingTerminated(SystemExit):
    """`train()` stopped on SIGTERM after saving a resumable checkpoint.

    A `SystemExit` with code 143: uncaught, the process exits 143, like one ended by SIGTERM, without a traceback.

    Attributes:
        checkpoint: the folder of the checkpoint saved at the stop (``output_dir/checkpoint-N``).
        step: the optimizer step it holds (N).
    """

    def __init__(self, checkpoint: str, step: int):
        super().__init__(SIGTERM_EXIT_CODE)
        self.checkpoint, self.step = checkpoint, step

    def __str__(self) -> str:
        return (f"Training stopped by SIGTERM after optimizer step {self.step}; its checkpoint is {self.checkpoint}. "
                "Resume with --resume_from_checkpoint last (the example scripts) or "
                "trainer.train(resume_from_checkpoint=True).")


class SigtermFlag:
    """A context manager: inside it, SIGTERM sets `received` instead of ending the process.

    On leaving, the previous handler is restored. A SIGTERM that was received but never acted on (`acted` still
    False: it came after the last point where the trainer looks) is then passed on to that previous handler, so it
    is not lost: with the default handler the process ends as it would have without the flag. The previous handler
    is kept as it is when it ignores SIGTERM (``SIG_IGN``), or outside the main thread (`installed` is then False).
    """

    def __init__(self):
        self.received = 0  # how many SIGTERMs arrived (a launcher may forward one the process already got)
        self.acted = False
        self.installed = False
        self._previous = None

    def _record(self, signum, frame) -> None:
        # Nothing else here: a handler runs between two bytecodes of whatever the main thread was doing.
        self.received += 1

    def __enter__(self) -> SigtermFlag:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("save_on_sigterm: train() runs outside the main thread, where Python cannot handle "
                           "signals; SIGTERM keeps its current behaviour (no checkpoint on SIGTERM).")
            return self
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_IGN:
            return self
        self._previous = previous
        signal.signal(signal.SIGTERM, self._record)
        self.installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.installed:
            return
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        self.installed = False
        if self.received and not self.acted:
            logger.warning("SIGTERM arrived after the last optimizer step; passing it on to the previous handler.")
            signal.raise_signal(signal.SIGTERM)
