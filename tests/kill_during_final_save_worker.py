"""Save a 41 MB student with `ProKTTrainer.save_model` over and over, until killed.

Launched by tests/test_final_save.py as ``python kill_during_final_save_worker.py FOLDER``; it prints ``ready``
once the trainer is built, and the test SIGKILLs it as soon as a temporary file of a save appears under FOLDER,
that is, in the middle of writing the weights.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.test_final_save import big_student_trainer  # noqa: E402

if __name__ == "__main__":
    from transformers.utils import logging

    logging.disable_progress_bar()
    trainer = big_student_trainer(sys.argv[1], seed=2)
    print("ready", flush=True)
    while True:
        trainer.save_model()
