"""Third-party converters must not silence the application's logging."""
from __future__ import annotations

import logging

from converters import openvino_ir


def test_openvino_conversion_keeps_the_root_log_level(cls_model):
    before = logging.root.level
    logging.root.setLevel(logging.WARNING)
    try:
        openvino_ir.read_onnx(cls_model)  # ov.convert_model sets the root logger to ERROR
        assert logging.root.level == logging.WARNING
        assert logging.getLogger("edgesdk.sinks.mqtt").isEnabledFor(logging.WARNING)
    finally:
        logging.root.setLevel(before)
