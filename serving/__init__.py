"""The serving side: gRPC/REST clients, a local TF-Serving-compatible server, and TF Serving's config files.

Only the client is imported here, so a client machine needs tensorflow-serving-api, grpcio and numpy alone.
"""

from serving.client import PredictClient, Prediction, RestClient, ServingError

__all__ = ["PredictClient", "Prediction", "RestClient", "ServingError"]
