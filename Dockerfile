# TF Serving image with an exported AlexNet baked in.
#
#   alexnet-tf export runs/demo                      # writes export/alexnet/<version>/
#   docker build -t alexnet-serving .                # GPU: --build-arg VARIANT=-gpu
#   docker run -p 8500:8500 -p 8501:8501 alexnet-serving
#
# TF_SERVING_VERSION matches tensorflow / tensorflow-serving-api 2.21 in setup.py.
ARG TF_SERVING_VERSION=2.21.0
ARG VARIANT=""
FROM tensorflow/serving:${TF_SERVING_VERSION}${VARIANT}

# The export directory to serve: every integer-named version under it (the newest is served).
ARG EXPORT_DIR=export/alexnet
ENV MODEL_NAME=alexnet
COPY ${EXPORT_DIR} /models/alexnet
COPY serving/batching.config serving/batching_bfloat16.config serving/monitoring.config serving/models.config /config/

EXPOSE 8500 8501

# The base image's entrypoint runs tensorflow_model_server --model_name=${MODEL_NAME}
# --model_base_path=/models/${MODEL_NAME} and appends these flags. Arguments to `docker run` replace all of them:
# for several models or pinned versions, repeat them with --model_config_file=/config/models.config
# --model_config_file_poll_wait_seconds=60 (the full command is in docs/serving.md). The health service answers
# grpc.health.v1 checks for "", "ModelService" and "PredictionService".
CMD ["--rest_api_port=8501", \
     "--enable_grpc_healthcheck_service=true", \
     "--enable_batching=true", \
     "--batching_parameters_file=/config/batching.config", \
     "--tensorflow_intra_op_parallelism=1", \
     "--monitoring_config_file=/config/monitoring.config", \
     "--file_system_poll_wait_seconds=30"]
