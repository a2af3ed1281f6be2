"""Published weights from outside the package: Caffe's bvlc_alexnet, read without Caffe.

    caffe_format   Caffe's files: `.caffemodel` (both layouts), `.binaryproto` mean, caffe-tensorflow `.npy`
    importer       `alexnet-tf import-weights`: bvlc_alexnet -> a run directory of the "caffe" variant

The importer writes a normal run directory, so it uses `training.config` for the run's config.json.
"""
