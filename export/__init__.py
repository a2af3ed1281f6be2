"""The export step: a trained AlexNet -> a versioned SavedModel for TF Serving, with 10-crop averaging in-graph."""

from export.precision import Agreement
from export.saved_model import (
    SIGNATURES,
    ExportError,
    ExportResult,
    export,
    export_saved_model,
    next_version,
    verify_with_session,
)

__all__ = ["SIGNATURES", "Agreement", "ExportError", "ExportResult", "export", "export_saved_model", "next_version",
           "verify_with_session"]
