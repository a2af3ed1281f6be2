"""`alexnet-tf export RUN_DIR`: a run's model -> a versioned SavedModel for TF Serving."""

from __future__ import annotations

from alexnet_tf.cli.common import UserError

NAME = "export"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        NAME,
        help="write a TF Serving SavedModel (10-crop averaging in-graph) from a training run",
        description="Export a run's model as BASE_DIR/NAME/VERSION/, a SavedModel with the signatures "
        "serving_default (image bytes, 10 crops averaged), center_crop (image bytes, one crop) and from_pixels "
        "(uint8 256x256 images). The version is written under a temporary name, loaded back through TF Serving's "
        "own TF1 Session path and run on every signature, then renamed into place.",
    )
    parser.add_argument("run_dir", help="a directory written by `alexnet-tf train` or `import-weights`, or a preset "
                        "directory (ImageClassifier.save_to_preset)")
    parser.add_argument("--base-dir", default="export", help="model base directory (default: export)")
    parser.add_argument("--name", default="alexnet", help="model name (default: alexnet)")
    parser.add_argument("--version", type=int, help="version number (default: the highest existing + 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--model", default="best", choices=("best", "final"), help="which saved model")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "auto"),
                        help="float32 (default); bfloat16: weights stored and convolutions run in bfloat16 (half the "
                        "memory; 1.36x the requests/s measured on an avx512_bf16 EPYC), published only when its "
                        "answers agree with float32's on the run's validation images (else the warm-up images); auto: "
                        "bfloat16 where this CPU computes it natively and the agreement holds, else float32")
    parser.add_argument("--agreement-images", type=int, default=1000,
                        help="how many validation images to compare bfloat16 with float32 on (default: 1000)")
    parser.add_argument("--force-precision", action="store_true",
                        help="publish the bfloat16 export even when it disagrees with float32 beyond rounding")
    parser.add_argument("--max-pixels", type=int, default=50_000_000,
                        help="refuse images larger than this (read from the header, before decoding)")
    parser.set_defaults(run=run)


def run(args) -> None:
    import pathlib

    import export
    from alexnet_tf.classifier import PresetError, presets
    from export import precision

    try:
        loaded = presets.read(args.run_dir, args.model)
    except PresetError as error:
        raise UserError(str(error)) from None
    if args.agreement_images < 1:
        raise UserError(f"--agreement-images must be at least 1, got {args.agreement_images}")
    images = precision.run_validation_images(args.run_dir, args.agreement_images) \
        if args.precision != "float32" else None
    try:
        result = export.export(loaded.model, args.base_dir, name=args.name, version=args.version,
                               mean_image=loaded.mean_image, labels=loaded.labels, max_pixels=args.max_pixels,
                               overwrite=args.overwrite, precision=args.precision, agreement_images=images,
                               force_precision=args.force_precision)
    except (export.ExportError, ValueError) as error:
        raise UserError(str(error)) from None
    if result.agreement is not None:
        print(result.agreement.line())
    if result.precision_note:
        print(f"precision auto: {result.precision_note}")
    print(f"exported version {result.version} ({result.precision}) to {result.path} (verified through TF Serving's "
          "Session path)")
    for name, signature in result.signatures.items():
        inputs = ", ".join(f"{k}: {v}" for k, v in signature["inputs"].items())
        outputs = ", ".join(f"{k}: {v}" for k, v in signature["outputs"].items())
        print(f"  {name}({inputs}) -> {outputs}")
    base = pathlib.Path(args.base_dir).resolve()
    print("next:")
    print(f"  alexnet-tf serve --model-base-path {base / args.name} --model-name {args.name}")
    print(f"  docker build --build-arg EXPORT_DIR={pathlib.Path(args.base_dir) / args.name} -t alexnet-serving . "
          "&& docker run -p 8500:8500 -p 8501:8501 alexnet-serving")
    print(f"  alexnet-tf predict IMAGE.jpg --server localhost:8500 --model-name {args.name}")
