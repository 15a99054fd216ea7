"""CTC text recognition: per-timestep character scores -> text, as PaddleOCR's CTCLabelDecode.

The dictionary is the bundle's ``labels`` (one character per class after the blank; PP-OCR
ONNX exports carry it in their ``character`` metadata). Class 0 is the CTC blank;
``space_char`` appends " " as the last class (PaddleOCR's use_space_char). Greedy decoding:
argmax per step, repeats merged, blanks dropped; the score is the mean probability of the
kept steps. The text goes into ``meta["text"]`` and ``meta["score"]`` (and ``topk`` as
``[(0, text, score)]`` so listings print it).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputMismatchError
from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size, pick_output


class CTCDecoder(Decoder):
    kind = "ctc"

    def __init__(self, labels: Optional[Sequence[str]] = None, blank: int = 0, space_char: bool = True,
                 output: Optional[str] = None, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        if not self.labels:
            raise ConfigError("the CTC decoder needs the character dictionary as the bundle's labels (PP-OCR "
                              "models carry it in their ONNX 'character' metadata; else pass --labels FILE)")
        self.blank, self.output = int(blank), output
        self.characters = ["<blank>"] + list(self.labels) + ([" "] if space_char else [])

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        probs = np.asarray(pick_output(outputs, self.output, "character scores"), np.float32)
        if probs.ndim != 3:
            raise InputMismatchError(f"CTC decoding expects scores [N, steps, classes], got {probs.shape}")
        if probs.shape[2] != len(self.characters):
            raise ConfigError(f"the model scores {probs.shape[2]} classes per step but the dictionary has "
                              f"{len(self.characters)} (blank + {len(self.labels)} labels"
                              f"{' + space' if self.characters[-1] == ' ' else ''}): wrong dictionary")
        best, conf = probs.argmax(axis=2), probs.max(axis=2)
        results = []
        for i in range(n):
            keep = np.ones(best.shape[1], bool)
            keep[1:] = best[i, 1:] != best[i, :-1]
            keep &= best[i] != self.blank
            text = "".join(self.characters[c] for c in best[i][keep])
            score = float(conf[i][keep].mean()) if keep.any() else 0.0
            results.append(Result(topk=[(0, text, score)], meta={"text": text, "score": score}))
        return results
