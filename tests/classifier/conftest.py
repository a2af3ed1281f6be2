"""Run directories of small random-weight AlexNets (paper and caffe variants), each with its export."""

import numpy as np
import pytest
import tensorflow as tf

import export
from alexnet_tf import build_alexnet
from alexnet_tf.data.stats import Stats

LABELS = [f"class_{i}" for i in range(10)]


def make_run(run_dir, variant: str, dtype: str | None = None):
    """A run directory as `alexnet-tf train` leaves it (best.keras, stats.npz, labels.txt, config.json)."""
    import keras

    keras.utils.set_random_seed(11)
    lrn = "caffe" if variant == "caffe" else "paper"
    model = build_alexnet(10, init="he", input_scale=1 / 64, variant=variant, lrn=lrn, dtype=dtype)
    rng = np.random.default_rng(5)
    mean = rng.uniform(90, 150, (256, 256, 3)).astype(np.float32)
    run_dir.mkdir(parents=True)
    model.save(run_dir / "best.keras")
    eigvec = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    Stats(mean, eigvec @ np.diag([0.2, 0.02, 0.004]) @ eigvec.T, np.array([0.2, 0.02, 0.004]), eigvec, 10).save(
        run_dir / "stats.npz")
    (run_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (run_dir / "config.json").write_text("{}\n")
    return model, mean


def session_outputs(version_dir, signature: str, image_bytes: list[bytes]) -> np.ndarray:
    """A signature's probabilities through the TF1 Session path TF Serving takes."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
        definition = meta.signature_def[signature]
        return session.run(definition.outputs["probabilities"].name,
                           {definition.inputs["image_bytes"].name: np.array(image_bytes, dtype=object)})


@pytest.fixture(scope="module")
def runs(module_tmp_path):
    """{variant: (run_dir, model, mean, version_dir)} for the paper and caffe variants, each exported."""
    made = {}
    for variant in ("paper", "caffe"):
        run_dir = module_tmp_path / f"run-{variant}"
        model, mean = make_run(run_dir, variant)
        result = export.export(model, module_tmp_path / f"export-{variant}", labels=LABELS, mean_image=mean)
        made[variant] = run_dir, model, mean, result.path
    return made


@pytest.fixture(scope="module")
def exported_run(runs):
    """The paper variant's (run_dir, model, mean, version_dir)."""
    return runs["paper"]


@pytest.fixture(scope="module")
def classifier(exported_run):
    """The paper variant's run as an ImageClassifier, loaded once for the tests that do not test loading."""
    from alexnet_tf.classifier import ImageClassifier

    return ImageClassifier.from_preset(exported_run[0])
