"""What every part of the local server shares: the failure a request ends with (a gRPC status code and a message)
and how a TensorFlow error becomes a message for the client, and how codes map to HTTP statuses."""

from __future__ import annotations

import re

import grpc

_DECODE_ERROR = re.compile(r"assertion failed: \[([^\]]*)\]")


class ServingFailure(Exception):
    """A request that fails with a gRPC status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def clean_message(error: Exception) -> str:
    """The line of a TensorFlow error a client can act on (an image-decoding assertion's own text, no graph noise)."""
    text = getattr(error, "message", None) or str(error)
    match = _DECODE_ERROR.search(text)
    if match:
        return match.group(1).strip().rstrip(".")
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith((" ", "\t", "Detected at"))
             and line.strip() != "Graph execution error:"]
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"\s*(\[\[.*|\[Op:.*)$", "", line.strip())


HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.INTERNAL: 500,
}
"""The HTTP status of a REST answer for each gRPC code (TF Serving's mapping; anything else is 500)."""
