"""TF Serving's model config: which models a server holds, where their versions live, which versions it keeps loaded
(the version policy) and the labels that name versions; read from a ModelServerConfig text proto and checked as
ServerCore does (server_core.cc: ValidateModelConfigList)."""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model: TF Serving's ModelConfig. `policy` is "latest" (the `num_versions` highest), "all" or "specific"
    (exactly `versions`); `labels` maps a version label to its version."""

    name: str
    base_path: pathlib.Path
    policy: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()
    labels: tuple[tuple[str, int], ...] = ()

    def aspired(self, on_disk: list[int]) -> set[int]:
        """The versions this policy wants loaded out of those on disk (file_system_storage_path_source.cc)."""
        if self.policy == "all":
            return set(on_disk)
        if self.policy == "specific":
            return self.versions & set(on_disk)
        return set(sorted(on_disk)[-self.num_versions:])

    def describe_policy(self) -> str:
        if self.policy == "specific":
            return f"specific {sorted(self.versions)}"
        return "all" if self.policy == "all" else f"latest {self.num_versions}"


def single_model(name: str, base_path: str | pathlib.Path) -> list[ModelConfig]:
    """The config --model_name / --model_base_path stand for (main.cc's BuildSingleModelConfig)."""
    return [ModelConfig(name, pathlib.Path(base_path))]


def parse_model_config(text: str, source: str = "the model config") -> list[ModelConfig]:
    """The models of a ModelServerConfig text proto; ValueError with TF Serving's reason for one it would refuse."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"Invalid protobuf file: '{source}': {error}") from None
    return from_proto(config)


def from_proto(config) -> list[ModelConfig]:
    """The models of a ModelServerConfig message (a parsed file, or HandleReloadConfigRequest's config)."""
    if config.HasField("custom_model_config"):
        raise ValueError("custom_model_config is not supported (as in TF Serving's model server)")
    models, names = [], set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise ValueError(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if not model.name:
            raise ValueError("a model config has no name")
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {model.name!r} has platform {model.model_platform!r}, not tensorflow")
        if not model.base_path.startswith("/") and "://" not in model.base_path:
            raise ValueError(f"Expected model {model.name} to have an absolute path or URI; "
                             f"got base_path()={model.base_path}")
        if "://" in model.base_path:
            raise ValueError(f"model {model.name}: base_path {model.base_path} is a URI; this server reads local "
                             "directories only")
        policy = model.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        num_versions = policy.latest.num_versions if kind == "latest" and policy.HasField("latest") else 1
        if kind == "latest" and num_versions < 1:
            num_versions = 1  # TF Serving: "latest { }" without num_versions keeps one
        models.append(ModelConfig(
            name=model.name, base_path=pathlib.Path(model.base_path), policy=kind, num_versions=num_versions,
            versions=frozenset(policy.specific.versions) if kind == "specific" else frozenset(),
            labels=tuple(sorted(model.version_labels.items()))))
    return models


def read_model_config(path: str | pathlib.Path) -> list[ModelConfig]:
    """The models of a --model_config_file; ValueError naming the file and what is wrong with it."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_model_config(text, str(path))
