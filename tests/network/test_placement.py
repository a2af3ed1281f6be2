"""Tower placement inside traced functions, proved on two logical CPU devices in a fresh process."""

import json
import re
import subprocess
import sys
import textwrap

from alexnet_tf.network import placement

PROBE = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from alexnet_tf import build_alexnet
    from alexnet_tf.network import placement
    devices = placement.tower_devices("CPU")
    model = build_alexnet(10, tower_devices=devices)
    model.compile()
    from alexnet_tf.network.training_forms import TrainingForms
    model.training_forms = TrainingForms(blocked_conv1=True, relu_in_lrn=True)  # on any CPU, as bf16 on AMX
    model.optimizer.build(model.trainable_variables)
    variables = {v.path: v.value.device for v in model.trainable_variables}
    x = tf.TensorSpec((2, 224, 224, 3), tf.float32)
    graph = tf.function(model.train_step).get_concrete_function((x, tf.TensorSpec((2,), tf.int64))).graph
    ops = [(op.name, op.type, op.device) for op in graph.get_operations()]

    @tf.function
    def predict(x):
        return model(x)

    with model.without_placement():
        plain = predict.get_concrete_function(x).graph
    print(json.dumps({"devices": devices, "ops": ops, "variables": variables,
                      "unplaced": sorted({op.device for op in plain.get_operations()})}))
""")


def test_each_tower_runs_on_its_device_inside_a_traced_train_step():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    dev_a, dev_b = report["devices"]
    assert dev_a.endswith("CPU:0") and dev_b.endswith("CPU:1")
    ops = report["ops"]

    def devices_of(layer, op_type):
        scope = re.compile(rf"(^|/){layer}(_\d+)?/")
        return {device for name, kind, device in ops if kind == op_type and scope.search(name)}

    # Each tower's forward ops run on the tower's device, conv3 included (it reads both towers, runs on its own).
    for layer, device in (("conv1_a", dev_a), ("conv2_b", dev_b), ("conv3_a", dev_a), ("conv5_b", dev_b)):
        assert devices_of(layer, "Conv2D") == {device}, layer
    # The LRN of a training step (the native op) on its tower's device, and its gradient op, which the tape
    # creates outside the layer's scope, on the same device.
    assert devices_of("conv2_a_lrn", "AlexnetLrn") == {dev_a}
    assert devices_of("conv2_a_lrn", "AlexnetLrnGrad") == {dev_a}
    assert devices_of("conv1_b_lrn", "AlexnetLrnGrad") == {dev_b}
    assert devices_of("fc6_b", "MatMul") >= {dev_b}
    # Gradient ops are colocated with the forward ops they differentiate.
    backprop = {device for name, kind, device in ops if kind == "Conv2DBackpropFilter" and "conv2_b" in name}
    assert backprop == {dev_b}
    # The training forms too: conv1 over space-to-depth blocks (its transposes and gradient), the ReLU in the LRN.
    assert devices_of("conv1_b", "Transpose") == {dev_b} and devices_of("conv1_a", "Conv2DBackpropFilter") == {dev_a}
    assert devices_of("conv1_a", "Relu") == set() and devices_of("conv3_a", "Relu") == {dev_a}
    # Each tower's variables live on its device.
    variables = report["variables"]
    assert variables["conv4_a/kernel"].endswith("CPU:0") and variables["conv4_b/kernel"].endswith("CPU:1")
    # Calls made with placement switched off (exports) carry no device at all.
    assert report["unplaced"] == [""]


def test_automatic_placement_wants_two_devices():
    assert placement.tower_devices("GPU") is None  # no GPUs on the test machine
    assert placement.validate(["/GPU:0", "/GPU:1"]) == ("/GPU:0", "/GPU:1")
    assert placement.validate(None) is None
