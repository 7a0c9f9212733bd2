"""Loading the tokenizer saved beside a checkpoint, without transformers' noise about its config.

    tokenizer = load_tokenizer("llava-onevision-qwen2-0.5b-ov")

`AutoTokenizer` reads the folder's config.json to pick a tokenizer class. For an original LLaVA-NeXT
folder that prints two messages that concern the model config, not the tokenizer; they are
silenced here, at this load site only (see `quiet_config_reading`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


class TokenizerNotFound(FileNotFoundError):
    """A checkpoint folder without tokenizer files, and no tokenizer given."""


# transformers' messages when AutoTokenizer reads an original LLaVA-NeXT config.json to pick a
# tokenizer class: its model_type ('llava_qwen') is unknown there, and its `"rope_scaling": null`
# goes through a deprecated setter. Neither touches the tokenizer; the model's config is read
# by `onevision.checkpoint.llava_next`, which drops rope_scaling as LLaVA-NeXT does.
_HARMLESS_CONFIG_LOG = "You are using a model of type"
_HARMLESS_CONFIG_WARNING = "`rope_scaling` is deprecated"


@contextlib.contextmanager
def quiet_config_reading():
    """Silence only the two transformers messages above, only while a tokenizer is loaded."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_HARMLESS_CONFIG_LOG)

    logger = logging.getLogger("transformers.configuration_utils")
    logger.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(_HARMLESS_CONFIG_WARNING), category=FutureWarning)
            yield
    finally:
        logger.removeFilter(keep)


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved in `folder` (transformers' AutoTokenizer, nothing downloaded).

    Raises:
        TokenizerNotFound: the folder holds none of the tokenizer files.
    """
    folder = Path(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerNotFound(
            f"no tokenizer in {folder}: looked for {', '.join(TOKENIZER_FILES)}. Save one beside the weights "
            "(onevision.checkpoint.save_hf(model, folder, tokenizer=...) or tokenizer.save_pretrained(folder)), "
            "or pass tokenizer= (a tokenizer or a folder holding one)"
        )
    from transformers import AutoTokenizer

    with quiet_config_reading():
        return AutoTokenizer.from_pretrained(str(folder))
