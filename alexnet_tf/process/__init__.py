"""What the package does to its own process and files, below everything else (imports nothing of alexnet_tf).

    runtime        TensorFlow's runtime defaults for fast CPU work, set when `alexnet_tf` is imported
    atomic         files written under a temporary name, flushed, then renamed: never half-written
    quiet_stderr   TensorFlow's C++ start-up lines filtered out of stderr (the CLI's default)
    progress       Keras' progress bar on a terminal or in Jupyter, a plain line every 30 s in a log

Nothing is imported here: `alexnet_tf` imports `runtime` before TensorFlow loads.
"""
