"""The input side: data sources, the offline `prepare` step, image ops, tf.data pipelines and the demo set."""
