"""Choosing the training path (precision x XLA): candidates per hardware, the pick, the per-machine cache."""

import json

import pytest

from alexnet_tf.training import execution
from alexnet_tf.training.execution import ExecutionPath as P

F32_XLA, F32_GRAPH = P("float32", True), P("float32", False)
BF16_XLA, BF16_GRAPH = P("mixed_bfloat16", True), P("mixed_bfloat16", False)


@pytest.mark.parametrize("flags, capabilities, expected", [
    ({"avx2", "fma"}, [], ()),  # AVX2 only: TensorFlow emulates bfloat16, which only loses time
    ({"avx512f", "avx512_bf16"}, [], ("mixed_bfloat16",)),
    ({"avx512f", "amx_bf16", "amx_tile"}, [], ("mixed_bfloat16",)),
    ({"avx512_bf16"}, [(6, 1)], ()),  # a GPU decides, not the host CPU: Pascal has no tensor cores
    (set(), [(7, 5)], ("mixed_float16",)),
    (set(), [(8, 0), (9, 0)], ("mixed_float16", "mixed_bfloat16")),
    (set(), [(7, 0), (8, 6)], ("mixed_float16",)),  # the oldest GPU decides
])
def test_native_mixed_precisions_follow_the_hardware(flags, capabilities, expected):
    assert execution.native_mixed_precisions(gpu_capabilities=capabilities, flags=flags) == expected


def test_candidates():
    assert execution.candidates("auto", "auto", mixed=("mixed_bfloat16",)) == [F32_XLA, F32_GRAPH, BF16_XLA,
                                                                              BF16_GRAPH]
    assert execution.candidates("auto", "auto", mixed=()) == [F32_XLA, F32_GRAPH]
    assert execution.candidates("float32", "auto", mixed=("mixed_bfloat16",)) == [F32_XLA, F32_GRAPH]
    assert execution.candidates("mixed_bfloat16", "off", mixed=()) == [BF16_GRAPH]  # the user's choice wins
    assert execution.candidates("auto", "on", mixed=("mixed_bfloat16",), xla_allowed=False) == [F32_GRAPH,
                                                                                              BF16_GRAPH]
    with pytest.raises(ValueError, match="precision"):
        execution.candidates("float8", "auto", mixed=())
    with pytest.raises(ValueError, match="jit"):
        execution.candidates("auto", "maybe", mixed=())


@pytest.mark.parametrize("timings, expected", [
    ({F32_XLA: 1.00, F32_GRAPH: 1.20}, F32_XLA),  # the AVX2 machine: XLA wins
    ({F32_XLA: 1.75, F32_GRAPH: 1.56, BF16_XLA: 1.75, BF16_GRAPH: 1.06}, BF16_GRAPH),  # the avx512_bf16 machine
    ({F32_GRAPH: 1.02, BF16_GRAPH: 1.00}, F32_GRAPH),  # bf16 only 2% faster: keep the paper's float32
    ({F32_GRAPH: 1.04, BF16_GRAPH: 1.00}, BF16_GRAPH),  # 4% faster: worth it
    ({BF16_XLA: 2.0, BF16_GRAPH: 1.0}, BF16_GRAPH),  # no float32 among the candidates
])
def test_pick_takes_the_fastest_and_prefers_float32_within_three_percent(timings, expected):
    assert execution.pick(timings) == expected


def test_pick_needs_timings():
    with pytest.raises(ValueError):
        execution.pick({})


class FakeTimer:
    """Seconds per step from a table, counting the trials it was asked for."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, path):
        self.calls.append(path)
        return self.table[path]


def test_choose_times_every_candidate_once_then_uses_the_cache(tmp_path):
    cache = execution.PathCache(tmp_path / "paths.json")
    timer = FakeTimer({F32_XLA: 1.75, F32_GRAPH: 1.56, BF16_XLA: 1.75, BF16_GRAPH: 1.06})
    lines = []
    paths = list(timer.table)
    first = execution.choose(paths, timer, cache=cache, trial={"batch": 128}, report=lines.append)
    assert first.path == BF16_GRAPH and not first.cached and timer.calls == paths
    assert any("timing 4 candidates" in line for line in lines)  # the progress lines
    assert json.loads(cache.path.read_text())  # written, as JSON

    again = execution.choose(paths, timer, cache=cache, trial={"batch": 128}, report=lines.append)
    assert again.path == BF16_GRAPH and again.cached and len(timer.calls) == 4  # no new trial
    assert "cached from" in again.describe(128) and "mixed_bfloat16 + graph 120.8" in again.describe(128)

    other = execution.choose(paths, timer, cache=cache, trial={"batch": 32}, report=lines.append)
    assert not other.cached and len(timer.calls) == 8  # another batch size is another trial
    assert len(json.loads(cache.path.read_text())) == 2


def test_choose_measures_again_when_the_cache_is_damaged(tmp_path):
    cache = execution.PathCache(tmp_path / "paths.json")
    cache.path.write_text("{not json")
    timer = FakeTimer({F32_XLA: 2.0, F32_GRAPH: 1.0})
    assert execution.choose(list(timer.table), timer, cache=cache, report=lambda line: None).path == F32_GRAPH
    assert len(timer.calls) == 2


def test_one_candidate_needs_no_trial(tmp_path):
    timer = FakeTimer({F32_GRAPH: 1.0})
    choice = execution.choose([F32_GRAPH], timer, cache=execution.PathCache(tmp_path / "p.json"))
    assert choice.path == F32_GRAPH and timer.calls == [] and not (tmp_path / "p.json").exists()


def test_the_cache_key_names_the_machine_and_the_conv1_form(monkeypatch):
    from alexnet_tf.network import space_to_depth

    keys = {execution.PathCache.key({"batch": 4}, [F32_XLA, F32_GRAPH])}
    monkeypatch.setattr(execution, "cpu_model", lambda: "Some Other CPU")
    keys.add(execution.PathCache.key({"batch": 4}, [F32_XLA, F32_GRAPH]))
    helps = space_to_depth.helps("bfloat16")
    monkeypatch.setattr(space_to_depth, "helps", lambda dtype: not helps)  # it changes which path wins
    keys.add(execution.PathCache.key({"batch": 4}, [F32_XLA, F32_GRAPH]))
    assert len(keys) == 3


def test_time_path_runs_real_steps_and_restores_the_policy():
    import keras

    from alexnet_tf import build_alexnet

    def build(path):
        model = build_alexnet(4, dtype=path.precision, init="he")
        model.compile(jit_compile=path.xla)
        return model

    seconds = execution.time_path(BF16_GRAPH, build, batch_size=2, steps=1, warmup=1, num_classes=4)
    assert seconds > 0
    assert keras.mixed_precision.global_policy().name == "float32"
